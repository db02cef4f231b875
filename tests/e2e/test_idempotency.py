"""RunInstances is idempotent by ClientToken: a lost reply never becomes a second instance.

moto ignores ClientToken; the fault proxy keeps tokens as EC2 does (a repeat with the
same parameters gets the original reservation, outcome ``replayed``). So if the
operator's token changed between botocore's retries or across a restart, moto would
launch a second instance and these tests would count two.
"""

from __future__ import annotations

import pytest

from tests.support.faultproxy import FaultRule, KillRule

from .conftest import instances_of, worker_manifest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("effect", ["forward_then_error", "forward_then_drop"])
def test_botocores_retry_after_a_lost_reply_reuses_the_token(kube, network, aws, proxy, operator, effect):
    # moto launches; the operator gets a 500 (or a dropped connection); botocore retries by itself.
    proxy.set_faults(FaultRule(code="InternalError", action="RunInstances", effect=effect, times=1))
    kube.apply(worker_manifest("lost-reply", network))
    kube.wait_condition("lost-reply", "Ready")

    worker = kube.get("lost-reply")
    live = instances_of(aws, worker["metadata"]["uid"])
    assert [i["InstanceId"] for i in live] == [worker["status"]["instanceId"]]
    assert proxy.calls()["RunInstances"] == {f"200+fault:{effect}": 1, "replayed": 1}


def test_a_restarted_operator_reuses_the_token_when_ec2_does_not_list_the_instance_yet(
        kube, network, aws, proxy, operator_factory):
    first = operator_factory()
    proxy.set_kills(KillRule(pid=first.pid, action="RunInstances", when="before_response"))
    kube.apply(worker_manifest("restarted", network))
    first.wait_exit(30)  # EC2 launched; the operator died before hearing so
    uid = kube.get("restarted")["metadata"]["uid"]
    assert "instanceId" not in kube.get("restarted").get("status", {})
    assert len(instances_of(aws, uid)) == 1

    # EC2 lists new instances late: the new process's lookup by uid tag finds nothing, so only
    # the ClientToken stands between it and a second instance.
    proxy.set_faults(FaultRule(code="", action="DescribeInstances", effect="empty",
                               param_value="tag:cml.dev/worker-uid"))
    operator_factory()
    kube.wait_condition("restarted", "Ready")

    assert proxy.count("DescribeInstances", "fault:empty") >= 1  # the lookup did miss
    assert proxy.calls()["RunInstances"] == {"200": 1, "replayed": 1}
    live = instances_of(aws, uid)
    assert [i["InstanceId"] for i in live] == [kube.get("restarted")["status"]["instanceId"]]
