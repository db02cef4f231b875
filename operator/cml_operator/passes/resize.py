"""A resize that never strands a worker: check the new type before the stop, restart after a failed modify."""

from __future__ import annotations

import copy
import logging

from ..ec2.exceptions import EC2InvalidParameterException, IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..reconcile.resize import resize_problem
from ..runtime import Runtime

logger = logging.getLogger(__name__)


async def check_new_type(runtime: Runtime, region: str, instance: CMLWorkerInstanceDto, new_type: str) -> None:
    """Raise ``EC2InvalidParameterException`` naming spec.instanceType if ``new_type`` cannot run there.

    Asked before the stop, so a type the zone does not offer, or of another architecture,
    leaves the instance running (Stalled/InvalidParameter) instead of stopped.
    """
    lookups = runtime.lookups
    assert lookups is not None
    zone = instance.availability_zone
    offered = await lookups.type_offered(region, new_type, zone) if zone else True
    architectures = await lookups.type_architectures(region, new_type) if offered else ()
    problem = resize_problem(new_type, zone, offered, architectures, instance.architecture)
    if problem is not None:
        raise EC2InvalidParameterException(
            f"Invalid {problem}; instance {instance.aws_instance_id} keeps running as {instance.instance_type}",
            code="InvalidInstanceType", operation="DescribeInstanceTypeOfferings", region=region,
            instance_id=instance.aws_instance_id,
        )


async def restart_after_failed_modify(runtime: Runtime, region: str, instance_id: str, old_type: str | None,
                                      error: IntegrationException) -> IntegrationException:
    """The stop happened, the modify did not: start the instance again as it was; return the error to report."""
    try:
        await runtime.ec2.start_instance(region, instance_id)
    except IntegrationException as start_error:
        logger.warning("instance %s stays stopped: starting it after a failed type change failed too: %s",
                       instance_id, start_error)
        return error
    reported = copy.copy(error)
    reported.message = f"{error.message}; instance {instance_id} started again with its old type {old_type}"
    reported.args = (reported.message,)
    return reported


async def restore_after_failed_start(runtime: Runtime, region: str, instance_id: str, old_type: str | None,
                                     new_type: str, error: IntegrationException) -> IntegrationException:
    """The type changed, then the start failed (no capacity for the new type): change it back and start.

    A worker that should run is never left stopped for a type EC2 cannot run now.
    """
    if old_type is None or old_type == new_type:
        return error
    try:
        await runtime.ec2.modify_instance_type(region, instance_id, old_type)
        await runtime.ec2.start_instance(region, instance_id)
    except IntegrationException as undo_error:
        logger.warning("instance %s stays stopped: restoring its type %s after a failed start failed too: %s",
                       instance_id, old_type, undo_error)
        return error
    reported = copy.copy(error)
    reported.message = (f"{error.message}; the start as {new_type} failed, so instance {instance_id} was changed "
                        f"back to {old_type} and started again")
    reported.args = (reported.message,)
    return reported
