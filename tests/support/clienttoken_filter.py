"""DescribeInstances' ``client-token`` filter, which moto lacks, answered from the proxy's token memory.

EC2 lets a caller find the instance a RunInstances ClientToken launched
(``Filters=[{"Name": "client-token", ...}]``) even when its tags are not listed yet or were
removed. moto ignores the filter; the fault proxy remembers every launch by token, so it
turns the filter into an ``instance-id`` filter with the ids that token launched (an id that
cannot exist when it launched none) and lets moto answer the rest of the call.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable

FILTER_NAME = "client-token"
#: Stands for "no instance": a well-formed id no launch ever gets, so moto's answer is empty.
NO_INSTANCE = "i-00000000000000000"
_NAME_KEY = re.compile(r"^Filter\.(\d+)\.Name$")


def instance_ids_in(payload: bytes) -> list[str]:
    """The instance ids of a RunInstances answer."""
    return re.findall(r"<instanceId>([^<]+)</instanceId>", payload.decode("utf-8", "replace"))


def rewrite_client_token_filter(body: bytes, ids_for_token: Callable[[str], list[str]]) -> bytes | None:
    """The form body with each ``client-token`` filter replaced by an ``instance-id`` filter; None when the
    call has no such filter (forward it unchanged)."""
    fields = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    numbers = {m.group(1) for key, value in fields if (m := _NAME_KEY.match(key)) and value == FILTER_NAME}
    if not numbers:
        return None
    kept: list[tuple[str, str]] = []
    tokens: dict[str, list[str]] = {number: [] for number in numbers}
    for key, value in fields:
        number = key.split(".")[1] if key.startswith("Filter.") else None
        if number in numbers:
            if key.startswith(f"Filter.{number}.Value."):
                tokens[number].append(value)
            continue
        kept.append((key, value))
    for number, values in sorted(tokens.items()):
        ids = sorted({i for token in values for i in ids_for_token(token)}) or [NO_INSTANCE]
        kept.append((f"Filter.{number}.Name", "instance-id"))
        kept += [(f"Filter.{number}.Value.{index}", i) for index, i in enumerate(ids, start=1)]
    return urllib.parse.urlencode(kept).encode()
