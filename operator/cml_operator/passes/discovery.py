"""One CMLWorkerDiscovery scan: read EC2 and the API server, import unmanaged instances, report orphans. No Kopf.

Orphans in the discovery's region are judged by ``passes.orphans`` with the
same worker list, and the Warning event goes on the discovery object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..kubeapi import CMLWORKERS, KubeApi, KubeApiError
from ..reconcile import reasons
from ..reconcile.adoption import adoption_allowed, refusal_message
from ..reconcile.conditions import Health, build_conditions, now_rfc3339
from ..reconcile.discovery import (
    DISCOVERY_LABEL,
    LIVE_STATES,
    DiscoverySpec,
    select_imports,
    tracked_instance_ids,
    worker_for_instance,
)
from ..reconcile.policy import classify
from ..reconcile.actions import Note
from ..runtime import Runtime
from .account import account_status, bind_account, subject_of
from .duplicates import handle_duplicates, judge_duplicates
from .orphans import all_workers, handle_orphans, judge_orphans, managed_instances



@dataclass(frozen=True)
class ScanResult:
    status: dict[str, Any]
    health: Health
    notes: tuple[Note, ...] = ()
    delay: float | None = None  # retry after this long (a temporary error)
    account: str = ""  # the CMLAccount scanned in ("" the operator's own identity)


async def discovery_pass(runtime: Runtime, body: Mapping[str, Any], *, cluster_id: str | None) -> ScanResult:
    """Scan once: import what no worker manages, report (and per --orphan-policy handle) orphans."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    spec = DiscoverySpec.from_dict(body.get("spec") or {})
    kube = runtime.kube
    assert kube is not None
    notes: list[Note] = []
    status: dict[str, Any] = {"observedGeneration": generation}
    account_name = ""
    try:
        runtime, account = await bind_account(runtime, subject_of("CMLWorkerDiscovery", body, spec.region, None))
        account_name = account.name
        if (shown := account_status(account, runtime)) is not None:
            status["account"] = shown
        images = await runtime.ec2.find_images(spec.region, spec.ami_owners, spec.ami_name_pattern)
        image_ids = [image.image_id for image in images]
        instances = (await runtime.ec2.find_instances(spec.region, image_ids=image_ids, states=LIVE_STATES,
                                                      tags=spec.tag_selector)) if image_ids else []
        managed = await managed_instances(runtime, spec.region, cluster_id)
        workers = await all_workers(kube, runtime.settings.namespaces)
        selection = select_imports(spec, image_ids, instances, tracked_instance_ids(workers))
        allowed = adoption_allowed(meta["namespace"], runtime.settings.adoption_namespaces)
        # Outside --adoption-namespaces nothing is imported: the instances are only read and counted.
        imported = await _import(kube, spec, selection.to_import, meta, notes, account_name) if allowed else []
        orphans = await judge_orphans(runtime, spec.region, managed, workers, cluster_id)
        notes.extend(await handle_orphans(runtime, spec.region, orphans))
        await handle_duplicates(runtime, spec.region,
                                await judge_duplicates(runtime, spec.region, managed, workers, cluster_id))
    except (IntegrationException, KubeApiError) as error:
        health, delay = _failure(runtime, error)
        notes.append(Note("Warning", health.reason, health.message))
        status["conditions"] = build_conditions(previous.get("conditions"), health, generation)
        return ScanResult(status, health, tuple(notes), delay, account_name)

    left = len(selection.candidates) - len(selection.to_import)
    message = (f"Matched {len(selection.matched)} instance(s) from {len(image_ids)} image(s); "
               f"imported {len(imported)}" + (f", {left} more next scan" if left > 0 else ""))
    if orphans:
        message += f"; {len(orphans)} orphan(s)"
    health = Health.ready(reasons.DISCOVERY_SCANNED, message)
    if not allowed:
        refusal = refusal_message(f"the {len(selection.candidates)} unmanaged instance(s) this scan matched "
                                  "(import)", meta["namespace"])
        health = Health.stalled(reasons.ADOPTION_NOT_ALLOWED, f"{message}. {refusal}")
        if previous_reason(previous) != reasons.ADOPTION_NOT_ALLOWED:
            notes.append(Note("Warning", reasons.ADOPTION_NOT_ALLOWED, refusal))
    status.update({
        "lastScanTime": now_rfc3339(), "matched": len(selection.matched),
        "imported": imported_before(workers, meta) + len(imported), "orphans": len(orphans),
        "conditions": build_conditions(previous.get("conditions"), health, generation),
    })
    return ScanResult(status, health, tuple(notes), account=account_name)


def previous_reason(previous: Mapping[str, Any]) -> str | None:
    """The reason the discovery's last scan ended with (Stalled first, else Ready)."""
    conditions = {c.get("type"): c for c in previous.get("conditions") or () if isinstance(c, Mapping)}
    stalled = conditions.get("Stalled") or {}
    return stalled.get("reason") if stalled.get("status") == "True" else None


def imported_before(workers: list[dict[str, Any]], meta: Mapping[str, Any]) -> int:
    """Workers this discovery imported that still exist (counted, not accumulated: a stale body cannot skew it)."""
    return sum(1 for body in workers
               if (body.get("metadata") or {}).get("namespace") == meta["namespace"]
               and ((body.get("metadata") or {}).get("labels") or {}).get(DISCOVERY_LABEL) == meta["name"])


async def _import(kube: KubeApi, spec: DiscoverySpec, instances: Sequence[CMLWorkerInstanceDto],
                  meta: Mapping[str, Any], notes: list[Note], account: str = "") -> list[str]:
    imported = []
    namespace = meta["namespace"]
    for dto in instances:
        manifest = worker_for_instance(dto, spec, meta["name"], namespace)
        if account:  # the worker adopts the instance in the account it was found in
            manifest["spec"]["accountRef"] = {"name": account}
        try:
            await kube.create(CMLWORKERS, namespace, manifest)
        except KubeApiError as error:
            if error.status == 409:
                continue  # imported already (another scan, another replica): left alone
            raise
        imported.append(dto.aws_instance_id)
        notes.append(Note("Normal", reasons.EVENT_IMPORTED,
                          f"Imported instance {dto.aws_instance_id} ({dto.instance_type}, {dto.instance_state}, "
                          f"{dto.ami_id}) as CMLWorker {namespace}/{dto.aws_instance_id}"))
    return imported


def _failure(runtime: Runtime, error: IntegrationException | KubeApiError) -> tuple[Health, float | None]:
    if isinstance(error, KubeApiError):
        message = f"The API server refused the scan: {error}"
        if error.permanent:
            return Health.stalled(reasons.INTEGRATION_ERROR, message), runtime.settings.slow_recheck
        return Health.reconciling(reasons.INTEGRATION_ERROR, message), 10.0
    decision = classify(error, slow_recheck_seconds=runtime.settings.slow_recheck)
    runtime.metrics.exceptions.labels(type(error).__name__, decision.kind.value).inc()
    if decision.temporary:
        return Health.reconciling(decision.reason, str(error)), decision.delay
    return Health.stalled(decision.reason, str(error)), decision.delay or runtime.settings.slow_recheck

