"""Pure decisions for a CMLWorkerPool: (pool, its children) -> what to create, delete and patch, and the status.

No I/O. The pool handler lists the children afresh, calls ``plan_pool`` and carries
out the plan. Children are CMLWorkers labelled ``cml.dev/pool=<pool>`` whose
controller ownerReference is the pool; anything else with the label is ignored.

Template fields a CMLWorker may change in place (``ROLLED_FIELDS``) are rolled to
every child by a JSON merge patch; any other difference makes a child outdated:
it keeps running as it is until someone deletes it and the pool makes a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import reasons
from .conditions import Health, HealthState, condition

POOL_LABEL = "cml.dev/pool"
#: Top-level spec fields a CMLWorker applies in place, so a template change reaches every child.
ROLLED_FIELDS = ("tags", "instanceType", "securityGroupIds", "detailedMonitoring", "desiredState", "deletionPolicy",
                 "schedule")
#: Nested spec fields rolled the same way (the parent object's other fields are not).
ROLLED_NESTED = (("cml", "idleStop"),)
#: spec.scaleDown.order when the pool does not say (the CRD default too).
DEFAULT_SCALE_DOWN_ORDER = ("NotReady", "Stopped", "Idle", "Newest")
#: A child with this annotation set to "true" is never picked to go (scale-down, rolling update).
DO_NOT_DISRUPT = "cml.dev/do-not-disrupt"
_STOPPED_STATES = frozenset({"stopping", "stopped"})


@dataclass(frozen=True)
class Child:
    """What the pool needs to know about one CMLWorker it owns."""

    name: str
    uid: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: str = ""  # metadata.creationTimestamp (RFC 3339, compares as text)
    deleting: bool = False
    ready: bool = False
    stalled_reason: str | None = None
    stalled_message: str = ""
    instance_state: str | None = None
    last_activity: str | None = None  # status.cml.lastActivityTime
    labs_running: int | None = None  # status.cml.labs.running; None when not known

    @property
    def protected(self) -> bool:
        return self.annotations.get(DO_NOT_DISRUPT) == "true"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Child:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        conditions = status.get("conditions")
        ready = condition(conditions, "Ready")
        stalled = condition(conditions, "Stalled")
        is_stalled = bool(stalled and stalled.get("status") == "True")
        return cls(
            name=meta.get("name", ""), uid=meta.get("uid", ""), spec=body.get("spec") or {},
            labels=meta.get("labels") or {}, annotations=meta.get("annotations") or {},
            created=meta.get("creationTimestamp") or "", deleting=bool(meta.get("deletionTimestamp")),
            ready=bool(ready and ready.get("status") == "True"),
            stalled_reason=str(stalled.get("reason")) if is_stalled and stalled else None,
            stalled_message=str(stalled.get("message", "")) if is_stalled and stalled else "",
            instance_state=status.get("instanceState"),
            last_activity=(status.get("cml") or {}).get("lastActivityTime"),
            labs_running=_running_labs(status.get("cml")),
        )


def _running_labs(cml: Any) -> int | None:
    labs = cml.get("labs") if isinstance(cml, Mapping) else None
    running = labs.get("running") if isinstance(labs, Mapping) else None
    return running if isinstance(running, int) and not isinstance(running, bool) else None


def owned_by(body: Mapping[str, Any], pool_uid: str) -> bool:
    """True when the pool with ``pool_uid`` is the object's controller."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("controller") and ref.get("uid") == pool_uid for ref in refs)


@dataclass(frozen=True)
class Template:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    spec: Mapping[str, Any]

    @classmethod
    def from_pool_spec(cls, pool_spec: Mapping[str, Any]) -> Template:
        template = pool_spec.get("template") or {}
        meta = template.get("metadata") or {}
        return cls(labels=dict(meta.get("labels") or {}), annotations=dict(meta.get("annotations") or {}),
                   spec=dict(template.get("spec") or {}))


@dataclass(frozen=True)
class PoolStatus:
    replicas: int
    ready_replicas: int
    updated_replicas: int
    outdated_replicas: int
    selector: str
    health: Health

    def as_dict(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "readyReplicas": self.ready_replicas,
                "updatedReplicas": self.updated_replicas, "outdatedReplicas": self.outdated_replicas,
                "selector": self.selector}


@dataclass(frozen=True)
class PoolPlan:
    create: int  # new children to make from the template
    delete: tuple[Child, ...]  # children to remove, in order
    patches: tuple[tuple[Child, dict[str, Any]], ...]  # (child, merge patch) to roll the template
    status: PoolStatus


# ---------------------------------------------------------------- the plan


def plan_pool(pool_name: str, replicas: int, template: Template, children: Iterable[Child],
              order: Sequence[str] = DEFAULT_SCALE_DOWN_ORDER, rolling_update: bool = False) -> PoolPlan:
    """How to bring the pool's children to ``replicas`` copies of ``template``.

    ``rolling_update``: replace outdated children one at a time, each only when every
    other child is Ready and none is still going (one extra instance at a time).
    """
    children = list(children)
    live = [child for child in children if not child.deleting]
    excess = len(live) - replicas
    candidates = [child for child in live if not child.protected]
    delete = tuple(scale_down_order(candidates, order)[:excess]) if excess > 0 else ()
    waiting = max(0, excess - len(delete))  # protected children the pool would remove but may not
    create = max(0, replicas - len(live))
    settled = not delete and not create and not any(child.deleting for child in children)
    replacing = None
    if rolling_update and settled and all(child.ready for child in live):
        outdated_now = [child for child in candidates if is_outdated(child, template)]
        if outdated_now:
            replacing = scale_down_order(outdated_now, order)[0]
            delete, create = (replacing,), 1
    removed = {child.uid for child in delete}
    kept = [child for child in live if child.uid not in removed]
    patches = tuple((child, patch) for child in kept if (patch := roll_patch(child, template, pool_name)))
    outdated = sum(1 for child in kept if is_outdated(child, template))
    ready = sum(1 for child in kept if child.ready)
    total = len(kept) + create
    if replacing is not None:
        health = Health.reconciling(reasons.POOL_ROLLING_UPDATE, f"Replacing outdated worker {replacing.name}; "
                                                                 f"{outdated} more outdated")
    elif waiting:
        protected = [child.name for child in live if child.protected]
        health = Health.reconciling(reasons.POOL_SCALE_DOWN_BLOCKED,
                                    f"Waiting to remove {waiting} more worker(s) to reach {replicas}: "
                                    f"{', '.join(protected)} carry {DO_NOT_DISRUPT}: \"true\"")
    else:
        health = pool_health(replicas, kept, create=create, deleting=len(delete))
        if rolling_update and outdated and health.state is HealthState.READY:
            health = Health.reconciling(reasons.POOL_ROLLING_UPDATE, f"{outdated} outdated worker(s) left to replace")
    status = PoolStatus(
        replicas=total, ready_replicas=ready, updated_replicas=total - outdated, outdated_replicas=outdated,
        selector=f"{POOL_LABEL}={pool_name}", health=health,
    )
    return PoolPlan(create=create, delete=delete, patches=patches, status=status)


def pool_health(replicas: int, kept: Sequence[Child], *, create: int, deleting: int) -> Health:
    """Ready when every wanted child exists and is Ready; Stalled when every other child is stalled alike."""
    ready = sum(1 for child in kept if child.ready)
    if create:
        return Health.reconciling(reasons.POOL_SCALING, f"Creating {create} worker(s): {len(kept)} of {replicas} exist")
    if deleting:
        return Health.reconciling(reasons.POOL_SCALING, f"Removing {deleting} worker(s) to reach {replicas}")
    if ready == replicas:
        return Health.ready(reasons.POOL_REPLICAS_READY, f"{ready} of {replicas} workers ready")
    waiting = [child for child in kept if not child.ready]
    stalled_reasons = {child.stalled_reason for child in waiting}
    if len(stalled_reasons) == 1 and None not in stalled_reasons:
        reason = next(iter(stalled_reasons))
        assert reason is not None
        example = waiting[0]
        return Health.stalled(reason, f"{len(waiting)} of {replicas} workers stalled ({reason}); "
                                      f"{example.name}: {example.stalled_message}".rstrip("; :"))
    return Health.reconciling(reasons.POOL_REPLICAS_NOT_READY, f"{ready} of {replicas} workers ready")


# ---------------------------------------------------------------- scale-down order


def scale_down_order(children: Sequence[Child], order: Sequence[str] = DEFAULT_SCALE_DOWN_ORDER) -> list[Child]:
    """Children sorted so the first ones go first when the pool shrinks; ties end by name.

    Before any criterion of ``order``: children with no running lab go first, those whose labs are
    not known next, those with running labs last (deleting one kills its users' labs).
    """
    ranked = sorted(children, key=lambda child: child.name)
    # Stable sorts from the least to the most important criterion.
    for criterion in reversed(tuple(order)):
        if criterion == "NotReady":
            ranked.sort(key=lambda child: child.ready)
        elif criterion == "Stopped":
            ranked.sort(key=lambda child: child.instance_state not in _STOPPED_STATES)
        elif criterion == "Idle":
            # No recorded activity counts as the idlest (sorts before any time).
            ranked.sort(key=lambda child: child.last_activity or "")
        elif criterion == "Newest":
            ranked.sort(key=lambda child: child.created, reverse=True)
        elif criterion == "Oldest":
            ranked.sort(key=lambda child: child.created)
    ranked.sort(key=_labs_rank)
    return ranked


def _labs_rank(child: Child) -> int:
    if child.labs_running is None:
        return 1
    return 0 if child.labs_running == 0 else 2


# ---------------------------------------------------------------- template roll


def rolled_view(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a worker spec a pool rolls to its children.

    A nested field's parent is always present (maybe empty), so the merge patch
    removes just that field, never the whole parent object.
    """
    view: dict[str, Any] = {key: spec[key] for key in ROLLED_FIELDS if key in spec}
    for parent, key in ROLLED_NESTED:
        nested = spec.get(parent)
        view.setdefault(parent, {})
        if isinstance(nested, Mapping) and key in nested:
            view[parent][key] = nested[key]
    return view


def fixed_view(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a worker spec a child keeps for life (everything not rolled)."""
    view = {key: value for key, value in spec.items() if key not in ROLLED_FIELDS}
    for parent, key in ROLLED_NESTED:
        nested = view.get(parent)
        if isinstance(nested, Mapping) and key in nested:
            rest = {k: v for k, v in nested.items() if k != key}
            if rest:
                view[parent] = rest
            else:
                del view[parent]
    return view


def is_outdated(child: Child, template: Template) -> bool:
    """A child differs from the template in a field it cannot change in place."""
    return fixed_view(child.spec) != fixed_view(template.spec)


def roll_patch(child: Child, template: Template, pool_name: str) -> dict[str, Any]:
    """The merge patch that brings the child's rolled fields and labels to the template ({} when none)."""
    patch: dict[str, Any] = {}
    spec_patch = merge_patch(rolled_view(child.spec), rolled_view(template.spec))
    if spec_patch:
        patch["spec"] = spec_patch
    # Labels and annotations are added or changed, never removed: others may own the rest.
    labels = {k: v for k, v in {**template.labels, POOL_LABEL: pool_name}.items() if child.labels.get(k) != v}
    annotations = {k: v for k, v in template.annotations.items() if child.annotations.get(k) != v}
    metadata = {key: value for key, value in (("labels", labels), ("annotations", annotations)) if value}
    if metadata:
        patch["metadata"] = metadata
    return patch


def merge_patch(current: Any, desired: Any) -> Any:
    """An RFC 7386 merge patch turning ``current`` into ``desired`` ({} for objects already equal)."""
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return desired
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            sub = merge_patch(current[key], value)
            patch[key] = sub
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch


# ---------------------------------------------------------------- a new child


def child_manifest(pool: Mapping[str, Any], template: Template) -> dict[str, Any]:
    """A new CMLWorker for the pool: generateName ``<pool>-`` (the API server adds 5 characters)."""
    meta = pool["metadata"]
    labels = {**template.labels, POOL_LABEL: meta["name"]}
    child_meta: dict[str, Any] = {
        "generateName": f"{meta['name']}-",
        "namespace": meta.get("namespace"),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": pool.get("apiVersion", "cml.dev/v1alpha1"), "kind": pool.get("kind", "CMLWorkerPool"),
            "name": meta["name"], "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
        }],
    }
    if template.annotations:
        child_meta["annotations"] = dict(template.annotations)
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker", "metadata": child_meta, "spec": dict(template.spec)}
