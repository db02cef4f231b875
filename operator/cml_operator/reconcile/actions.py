"""What a pass does: the EC2 actions a plan lists, in order, and the events it posts. Pure data.

``reconcile.worker`` decides them, ``passes`` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Launch:
    """Resolve the image and RunInstances with this idempotency token."""

    client_token: str
    tags: dict[str, str]


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Stop:
    #: Set when stopping to change the type: the new type is checked against the AZ and the
    #: instance's architecture first, so a type that cannot run there never stops the instance.
    resize_to: str | None = None


@dataclass(frozen=True)
class ModifyType:
    instance_type: str


@dataclass(frozen=True)
class ModifySecurityGroups:
    group_ids: tuple[str, ...]


@dataclass(frozen=True)
class SetMonitoring:
    enabled: bool


@dataclass(frozen=True)
class SetMetadataOptions:
    http_tokens: str
    hop_limit: int


@dataclass(frozen=True)
class SyncTags:
    add: dict[str, str]
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Terminate:
    pass


@dataclass(frozen=True)
class RemoveOwnershipTags:
    pass


Action = (Launch | Start | Stop | ModifyType | ModifySecurityGroups | SetMonitoring | SetMetadataOptions | SyncTags
          | Terminate | RemoveOwnershipTags)


@dataclass(frozen=True)
class Note:
    """An event to post on the object."""

    type: str  # Normal or Warning
    reason: str
    message: str
