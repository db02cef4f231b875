"""The benchmark's own arithmetic: passes from the proxy log, the RSS plateau, limits, instance counts."""

from __future__ import annotations

import pytest

from tests.bench import measure
from tests.bench.measure import Limits, instance_problems, plateau, resync_passes

MARK = ["tag:cml.dev/cluster"]


def call(t: float, action: str = "DescribeInstances", filters: list[str] | None = None):
    return (t, action, "200", filters or [])


def test_a_managed_by_query_starts_a_pass_and_its_later_pages_belong_to_it():
    log = [call(0.0, "RunInstances"), call(1.0, filters=MARK), call(1.1, filters=MARK),
           call(1.2, "DescribeInstanceStatus"), call(3.0, "DescribeInstances"),  # a worker's own read
           call(21.0, filters=MARK), call(21.2, "DescribeInstanceStatus"), call(21.3, "CreateTags")]

    before, passes = resync_passes(log, min_gap=10)

    assert before == [call(0.0, "RunInstances")]
    assert [p.reads for p in passes] == [4, 2]  # CreateTags is not a read
    assert passes[0].read_window(gap=1.0) == (1.0, 1.2)  # the worker's read 1.8 s later is not the pass


@pytest.mark.parametrize(("levels", "after"), [
    ([100, 110, 110.5, 110, 110, 110, 110], 7),  # grew once (by 10), then 5 quiet passes
    ([100, 100, 100, 100, 100, 100], 6),
    ([100, 101.5, 103, 104.5, 106, 107.5, 109], None),  # creeping up by more than the tolerance
    ([100, 110, 110, 110, 110], None),  # only 3 quiet passes so far
])
def test_rss_is_steady_after_5_passes_without_growth(levels, after):
    assert plateau(levels, window=5, tolerance_mb=1.0) == after


def test_limits_name_every_figure_over_its_limit_and_only_those():
    found = Limits().violations(ready_s=130, reads_per_resync=11, writes_per_worker=5.0, rss_steady_mb=201)
    assert found == ["ready_s=130 is over its limit 120 (--max-ready-s)",
                     "rss_steady_mb=201 is over its limit 200 (--max-rss-mb)"]
    # Two decimals would print 7.003 as 7.00, "over its limit 7": the figure shows why it failed.
    assert Limits().violations(ready_s=1, reads_per_resync=1, writes_per_worker=7.003, rss_steady_mb=1) == \
        ["k8s_writes_per_worker=7.003 is over its limit 7 (--max-writes-per-worker)"]
    assert Limits(max_ready_s=None).violations(ready_s=1e9, reads_per_resync=0, writes_per_worker=0,
                                               rss_steady_mb=0) == []


def test_a_nan_figure_is_not_a_pass():
    # No pass seen means no figure; the benchmark reports that as a problem of its own, and NaN > limit
    # is False, so the limit check alone would let it through.
    assert Limits().violations(ready_s=1, reads_per_resync=float("nan"), writes_per_worker=1,
                               rss_steady_mb=1) == []


def test_duplicate_and_missing_instances_are_problems():
    assert instance_problems({"a": ["i-1"], "b": ["i-2"]}) == []
    problems = instance_problems({"a": ["i-1", "i-3"], "b": [], "c": ["i-2"]})
    assert len(problems) == 2
    assert "1 workers with more than one instance" in problems[0] and "1 workers without an instance" in problems[1]


METRICS = """\
# HELP apiserver_request_total Counter of apiserver requests
apiserver_request_total{code="200",resource="cmlworkers",subresource="status",verb="PATCH"} 7
apiserver_request_total{code="409",resource="cmlworkers",subresource="status",verb="PATCH"} 2
apiserver_request_total{code="201",resource="events",subresource="",verb="POST"} 3
apiserver_request_total{code="200",resource="cmlworkers",subresource="",verb="GET"} 50
apiserver_request_total{code="200",resource="cmlworkerpools",subresource="",verb="PATCH"} 4
apiserver_request_total{code="200",resource="pods",subresource="",verb="DELETE"} 1e+00
"""


def test_apiserver_writes_counts_writes_of_the_named_resources_across_codes() -> None:
    writes = measure.apiserver_writes(METRICS, ("cmlworkers", "events"))
    assert writes == {"PATCH cmlworkers/status": 9, "POST events": 3}
    assert measure.apiserver_writes(METRICS, ("cmlworkerpools", "pods")) == {
        "PATCH cmlworkerpools": 4, "DELETE pods": 1}


def test_diff_keeps_only_what_changed() -> None:
    assert measure.diff({"a": 5, "b": 2, "c": 1}, {"a": 3, "b": 2}) == {"a": 2, "c": 1}


def test_a_pass_breakdown_tells_the_pass_own_reads_from_the_workers_later_ones():
    log = [call(1.0, filters=MARK), call(1.2, "DescribeInstanceStatus"), call(1.3, "DescribeInstanceStatus"),
           call(6.0, "DescribeInstances"), call(6.1, "CreateTags")]
    _, passes = resync_passes(log, min_gap=10)
    assert passes[0].breakdown(gap=2.0) == {"DescribeInstanceStatus (pass)": 2, "DescribeInstances (pass)": 1,
                                            "DescribeInstances (after)": 1}


def test_status_patches_are_read_from_the_operators_metric_by_state_and_reason():
    text = ('# HELP cml_status_patches_total x\n# TYPE cml_status_patches_total counter\n'
            'cml_status_patches_total{reason="Provisioning",state="Reconciling"} 1000.0\n'
            'cml_status_patches_total{reason="InstanceReady",state="Ready"} 1000.0\n'
            'cml_status_patches_total{reason="IntegrationError",state="Reconciling"} 1.0\n'
            'cml_status_patches_created{reason="Provisioning",state="Reconciling"} 1.7e+09\n')
    assert measure.status_patches(text) == {"Ready/InstanceReady": 1000, "Reconciling/IntegrationError": 1,
                                            "Reconciling/Provisioning": 1000}


def test_ec2_errors_are_the_failed_attempts_by_operation_and_outcome():
    text = ('# HELP cml_ec2_api_calls_total x\n# TYPE cml_ec2_api_calls_total counter\n'
            'cml_ec2_api_calls_total{operation="RunInstances",outcome="ok",region="us-east-1"} 1000.0\n'
            'cml_ec2_api_calls_total{operation="RunInstances",outcome="ResponseParserError",region="us-east-1"} 1.0\n'
            'cml_ec2_api_calls_total{operation="DescribeInstances",outcome="ReadTimeoutError",region="us-east-1"} 2.0\n'
            'cml_ec2_api_calls_total{operation="DescribeInstances",outcome="ReadTimeoutError",region="eu-west-1"} 1.0\n')
    assert measure.ec2_errors(text) == {"DescribeInstances/ReadTimeoutError": 3, "RunInstances/ResponseParserError": 1}
