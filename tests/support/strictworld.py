"""The strict EC2 world in one call: the fault proxy with EC2's clock on and the operator's key held to IAM.

make dev, the benchmarks and the e2e fixtures all run the operator against this, so
no figure or demo comes from the kind double (moto's instant, policy-free EC2).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tests.cluster.controlplane import ControlPlane
from tests.support.ec2iam import DEFAULT_POLICIES
from tests.support.processes import FaultProxyProcess

#: EC2's clock in the benchmarks: the short ``test`` preset (the figures measure the operator, not EC2's
#: boot time), or CML_EC2_TIMING; ``off`` brings back moto's instant world for a comparison.
BENCH_EC2_TIMING = os.environ.get("CML_EC2_TIMING", "test")

#: What the operator may do in make dev and the benchmarks: the shipped policy plus adoption.
OPERATOR_POLICIES = (*DEFAULT_POLICIES, "deploy/iam-policy-adoption.json")


def cluster_id_of(plane: ControlPlane) -> str:
    """The operator's default cluster id (kube-system's uid), which the policies' CLUSTER_ID stands for."""
    return plane.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout.strip()


def strict_proxy(moto_url: str, plane: ControlPlane, timing: str,
                 policies: Sequence[str] = OPERATOR_POLICIES) -> FaultProxyProcess:
    """A started fault proxy in front of ``moto_url`` with ``timing`` (a preset of tests/support/ec2timing.py)
    and IAM enforced on the operator's key."""
    proxy = FaultProxyProcess(moto_url).start()
    proxy.set_timing(timing)
    proxy.set_iam(cluster_id_of(plane), tuple(policies))
    return proxy
