"""EC2 tag rules, checked before AWS is called so the error can name the offending key."""

from __future__ import annotations

from collections.abc import Mapping

from .exceptions import EC2Exception

#: EC2's per-resource limit, which the operator's own tags share with the user's.
MAX_TAGS_PER_RESOURCE = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
RESERVED_PREFIX = "aws:"


def tag_problems(tags: Mapping[str, str]) -> list[str]:
    """Every rule ``tags`` breaks, each naming the key; empty when valid."""
    problems: list[str] = []
    if len(tags) > MAX_TAGS_PER_RESOURCE:
        problems.append(f"{len(tags)} tags exceed EC2's limit of {MAX_TAGS_PER_RESOURCE} per resource")
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
            problems.append(f"tag key {key!r} must be 1..{MAX_KEY_LENGTH} characters")
        elif key.lower().startswith(RESERVED_PREFIX):
            problems.append(f"tag key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}")
        if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
            problems.append(f"tag {key!r} value must be a string of at most {MAX_VALUE_LENGTH} characters")
    return problems


def validate_tags(
    tags: Mapping[str, str],
    *,
    error: type[EC2Exception],
    operation: str,
    region: str | None = None,
    instance_id: str | None = None,
) -> None:
    """Raise ``error`` (not retryable) listing every broken rule."""
    problems = tag_problems(tags)
    if problems:
        code = "TagLimitExceeded" if len(tags) > MAX_TAGS_PER_RESOURCE else "InvalidParameterValue"
        raise error(
            f"{operation} refused before calling AWS [{code}]: " + "; ".join(problems),
            code=code, operation=operation, region=region, instance_id=instance_id, retryable=False,
        )
