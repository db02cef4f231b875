"""What both passes share: the result type, carrying out one action, error helpers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from ..ec2.client import MetadataOptions
from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..reconcile.conditions import Health
from ..reconcile.policy import Decision
from ..reconcile.actions import (
    Action,
    ModifySecurityGroups,
    ModifyType,
    Note,
    RemoveOwnershipTags,
    SetMetadataOptions,
    SetMonitoring,
    Start,
    Stop,
    SyncTags,
    Terminate,
)
from ..reconcile.worker import OWNERSHIP_TAGS, Observation
from ..runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassResult:
    status: dict[str, Any]
    health: Health
    notes: tuple[Note, ...] = ()
    decision: Decision | None = None  # set when an error ended the pass
    error: Exception | None = None
    poll_soon: bool = False
    release: bool = False  # deletion only: the finalizer may go


class Failed(Exception):
    """Carries an error together with what the pass had learned before it."""

    def __init__(self, error: Exception, observation: Observation | None, *,
                 launch_attempt: int | None = None, completed: int = 0, restarted: bool = False,
                 token_gone: bool = False, refused_resize: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.observation = observation
        #: Set when RunInstances itself failed: the creationAttempt its ClientToken was built from.
        self.launch_attempt = launch_attempt
        #: How many of the plan's actions succeeded before the error (what EC2 was really asked to do).
        self.completed = completed
        #: A failed type change was undone by a StartInstances of its own (it is bounded like any Start).
        self.restarted = restarted
        #: RunInstances said IdempotentParameterMismatch and the token's instance is listed as gone.
        self.token_gone = token_gone
        #: The instance type EC2 refused (the modify, or the start right after it): remembered per generation.
        self.refused_resize = refused_resize



async def apply_action(runtime: Runtime, region: str, instance_id: str, action: Action) -> None:
    ec2 = runtime.ec2
    if isinstance(action, Start):
        await ec2.start_instance(region, instance_id)
    elif isinstance(action, Stop):
        await ec2.stop_instance(region, instance_id)
    elif isinstance(action, ModifyType):
        await ec2.modify_instance_type(region, instance_id, action.instance_type)
    elif isinstance(action, ModifySecurityGroups):
        await ec2.modify_security_groups(region, instance_id, action.group_ids)
    elif isinstance(action, SetMonitoring):
        await ec2.set_detailed_monitoring(region, instance_id, action.enabled)
    elif isinstance(action, SetMetadataOptions):
        await ec2.modify_metadata_options(region, instance_id, MetadataOptions(action.http_tokens, action.hop_limit))
    elif isinstance(action, SyncTags):
        if action.add:
            await ec2.add_tags(region, instance_id, action.add)
        if action.remove:
            await ec2.remove_tags(region, instance_id, action.remove)
    elif isinstance(action, Terminate):
        await ec2.terminate_instance(region, instance_id)
    elif isinstance(action, RemoveOwnershipTags):
        await ec2.remove_tags(region, instance_id, OWNERSHIP_TAGS)
    else:  # pragma: no cover - every action type is handled above
        raise AssertionError(f"unknown action {action!r}")



def expected_after(instance: CMLWorkerInstanceDto, action: Action) -> CMLWorkerInstanceDto:
    """What EC2 shows once a (non state-changing) call succeeded; the cache takes it at once."""
    if isinstance(action, SyncTags):
        tags = {k: v for k, v in instance.tags.items() if k not in action.remove}
        tags.update(action.add)
        return replace(instance, tags=tags, instance_name=tags.get("Name"))
    if isinstance(action, RemoveOwnershipTags):
        return replace(instance, tags={k: v for k, v in instance.tags.items() if k not in OWNERSHIP_TAGS})
    if isinstance(action, ModifySecurityGroups):
        return replace(instance, security_group_ids=list(action.group_ids))
    if isinstance(action, SetMonitoring):
        return replace(instance, monitoring="pending" if action.enabled else "disabling")
    return instance


def with_account(result: PassResult, account: dict[str, str] | None) -> PassResult:
    """``status.account`` of a pass bound to a CMLAccount (left as it was for the operator's own identity)."""
    if account is None:
        return result
    return replace(result, status={**result.status, "account": account})


def capped(runtime: Runtime, decision: Decision) -> Decision:
    cap = runtime.settings.max_retry_delay
    if cap is None or decision.delay is None or not decision.temporary or decision.delay <= cap:
        return decision
    return replace(decision, delay=cap)


def as_integration(error: Exception) -> IntegrationException:
    if isinstance(error, IntegrationException):
        return error
    logger.error("unexpected error in a reconcile pass", exc_info=error)
    return IntegrationException(f"internal error: {type(error).__name__}: {error}", code=type(error).__name__)

