"""--malloc-arenas really bounds glibc's arenas: counted with malloc_info in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cml_operator.malloc import arenas_to_set, limit_arenas

PROGRAM = textwrap.dedent("""
    import ctypes, ctypes.util, sys, tempfile, threading
    from cml_operator.malloc import arenas_to_set, limit_arenas
    limit_arenas(int(sys.argv[1]))
    together = threading.Barrier(8)
    def work():
        kept = [bytearray(100_000) for _ in range(20)]  # below the mmap threshold: from an arena
        together.wait()  # all alive at once: an exited thread's arena would be handed to the next
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        fp = libc.fopen(out.name.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        print(open(out.name).read().count("<heap nr="))
""")


def arenas_after_eight_threads(limit: int) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(limit)], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc(), reason="malloc arenas are glibc's")
def test_the_arena_cap_holds_where_eight_threads_would_take_an_arena_each():
    assert arenas_after_eight_threads(0) > 2  # glibc's own default: the threads got arenas of their own
    assert arenas_after_eight_threads(2) <= 2


def test_zero_leaves_glibc_alone():
    assert limit_arenas(0) is False


def test_a_malloc_arena_max_the_user_set_is_left_as_it_is():
    assert arenas_to_set(2, {"MALLOC_ARENA_MAX": "4"}) == 0
    assert arenas_to_set(2, {}) == 2 and arenas_to_set(2, {"MALLOC_ARENA_MAX": ""}) == 2
