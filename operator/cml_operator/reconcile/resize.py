"""Can this instance run as that type? Decided before a resize stops anything (pure).

A resize is stop -> modify -> start. EC2 accepts the stop whatever the new type is, and
refuses the modify only afterwards, leaving the worker stopped. So the pass asks EC2
first (DescribeInstanceTypeOfferings for the availability zone, DescribeInstanceTypes for
the architectures) and this function reads the answers.
"""

from __future__ import annotations

from collections.abc import Sequence


def resize_problem(
    instance_type: str,
    availability_zone: str | None,
    offered: bool,
    type_architectures: Sequence[str],
    instance_architecture: str | None,
) -> str | None:
    """Why ``instance_type`` cannot run where the instance is (a message naming the field), or None."""
    where = availability_zone or "the instance's availability zone"
    if not offered:
        return (f"spec.instanceType {instance_type} is not offered in {where}; "
                "choose a type offered there (aws ec2 describe-instance-type-offerings)")
    if instance_architecture and type_architectures and instance_architecture not in type_architectures:
        return (f"spec.instanceType {instance_type} supports {', '.join(type_architectures)}, "
                f"but the instance and its AMI are {instance_architecture}")
    return None
