"""buildah/podman helpers for the image tests: build the Dockerfile once per session, run it.

The scripts in tests/image/ do the work (they are what `make image` runs); this module calls
them with the project-local containers and storage configuration (tests/image/env.sh:
vfs storage, runc, no default ulimits), and wraps `podman` the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "tests" / "image"


def container_env() -> dict[str, str]:
    """The environment buildah and podman need here (what env.sh exports)."""
    return {**os.environ, "CONTAINERS_CONF": str(IMAGE_DIR / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(IMAGE_DIR / "storage.conf"),
            "BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot")}


def tools_available() -> bool:
    return all(shutil.which(tool) for tool in ("buildah", "podman", "runc", "debootstrap"))


def install_tools() -> None:
    subprocess.run([str(IMAGE_DIR / "install-tools.sh")], check=True, timeout=900)


@dataclass(frozen=True)
class BuiltImage:
    name: str
    base: str
    seconds: float
    size_bytes: int


def podman(*args: str, check: bool = True, timeout: float = 120, input: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], env=container_env(), capture_output=True, text=True,
                          timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def build_image(image: str = "localhost/cml-operator:test", base: str | None = None) -> BuiltImage:
    """`tests/image/build.sh` (what `make image` runs); the local Debian base unless ``base`` is given."""
    env = {**container_env(), "IMAGE": image}
    if base:
        env["BASE"] = base
    began = time.monotonic()
    proc = subprocess.run([str(IMAGE_DIR / "build.sh")], env=env, capture_output=True, text=True, timeout=2400)
    if proc.returncode != 0:
        raise RuntimeError(f"tests/image/build.sh failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    seconds = time.monotonic() - began
    used_base = base or subprocess.run([str(IMAGE_DIR / "base.sh")], env=env, capture_output=True, text=True,
                                       check=True).stdout.strip()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    return BuiltImage(image, used_base, seconds, size)


def image_size(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
