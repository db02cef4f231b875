"""May this worker touch that instance? The ownership model, as one pure function.

An instance belongs to the worker whose uid is in ``cml.dev/worker-uid`` and to
the cluster whose id is in ``cml.dev/cluster``. The operator reads both before
every mutating call (stop, start, modify, terminate, tag); an instance that names
another worker or another cluster is foreign and is never touched. An instance
with no worker tag is unclaimed: a worker may claim it (by tagging) only when the
user named it (``spec.instanceId``) or a backup's ``cml.dev/instance-id``
annotation proves it was this worker's (see ``docs/ownership.md``).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

MANAGED_BY = "cml-operator"
TAG_UID = "cml.dev/worker-uid"
TAG_WORKER = "cml.dev/worker"
TAG_MANAGED_BY = "cml.dev/managed-by"
TAG_CLUSTER = "cml.dev/cluster"
#: Removed on deletionPolicy Retain: afterwards nothing claims the instance.
OWNERSHIP_TAGS = (TAG_UID, TAG_WORKER, TAG_MANAGED_BY, TAG_CLUSTER)
#: The annotation that carries the instance id across a backup and restore.
ANNOTATION_INSTANCE_ID = "cml.dev/instance-id"
#: Beside it, the instance's region (also in status.region): a changed spec.region must not leak it.
ANNOTATION_REGION = "cml.dev/region"

#: EC2's limit for a tag value.
MAX_TAG_VALUE = 256
_HASH_CHARS = 12


class Verdict(enum.Enum):
    OURS = "ours"  # this worker's uid, and this cluster's id (or no cluster tag yet: an older release's tags)
    UNCLAIMED = "unclaimed"  # no worker uid tag: nobody's, claimable only when named or proven
    OTHER_WORKER = "other-worker"  # another worker's uid
    OTHER_CLUSTER = "other-cluster"  # another cluster's id


@dataclass(frozen=True)
class Ownership:
    verdict: Verdict
    #: Who owns it, for people: ``namespace/name (uid ...)`` or ``cluster ...``.
    owner: str = ""

    @property
    def ours(self) -> bool:
        return self.verdict is Verdict.OURS

    @property
    def foreign(self) -> bool:
        return self.verdict in (Verdict.OTHER_WORKER, Verdict.OTHER_CLUSTER)


def ownership(tags: Mapping[str, str], worker_uid: str, cluster_id: str) -> Ownership:
    """Whose instance this is, judged from its tags alone.

    The cluster tag is checked first: an instance of another cluster is foreign
    whatever its uid says. An instance with our uid and no cluster tag yet was
    tagged by an earlier release: it is ours (the next pass adds the cluster tag).
    """
    cluster = tags.get(TAG_CLUSTER)
    if cluster is not None and cluster != cluster_id:
        return Ownership(Verdict.OTHER_CLUSTER, f"cluster {cluster}" + _worker_of(tags))
    uid = tags.get(TAG_UID)
    if uid is None or uid == "":
        return Ownership(Verdict.UNCLAIMED)
    if uid != worker_uid:
        name = tags.get(TAG_WORKER)
        return Ownership(Verdict.OTHER_WORKER, f"{name} (uid {uid})" if name else f"uid {uid}")
    return Ownership(Verdict.OURS)


def may_reattach(tags: Mapping[str, str], worker_tag: str, cluster_id: str) -> bool:
    """A restored object (new uid) may take back the instance its ``cml.dev/instance-id`` annotation names.

    Only when the instance says it belonged to a worker of the same ``namespace/name``
    in this cluster (both tags present and equal): names are unique per namespace, so
    the worker that launched it is gone (this object replaced it). A copied manifest
    under another name, or another cluster's instance, does not qualify.
    """
    return (bool(cluster_id) and tags.get(TAG_CLUSTER) == cluster_id and tags.get(TAG_WORKER) == worker_tag
            and bool(tags.get(TAG_UID)))


def _worker_of(tags: Mapping[str, str]) -> str:
    name, uid = tags.get(TAG_WORKER), tags.get(TAG_UID)
    if name:
        return f", worker {name}"
    return f", worker uid {uid}" if uid else ""


def worker_tag_value(namespace: str, name: str) -> str:
    """``namespace/name``, shortened deterministically when it would pass EC2's 256 characters.

    A namespace (63) and a name (253) can reach 317 characters; the tag keeps the
    first characters and replaces the rest with a hash of the whole, so two long
    names never collide and the same worker always gets the same value.
    """
    full = f"{namespace}/{name}"
    if len(full) <= MAX_TAG_VALUE:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_CHARS]
    return f"{full[:MAX_TAG_VALUE - _HASH_CHARS - 1]}~{digest}"
