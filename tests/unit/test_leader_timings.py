"""The leader-election timings are flags (the chart's leaderElection.leaseDuration etc.), checked for order."""

from __future__ import annotations

import pytest

from cml_operator.cli import build_parser, settings_from_args


def _settings(*argv: str):
    return settings_from_args(build_parser().parse_args(["run", *argv]))


def test_lease_timings_reach_the_settings() -> None:
    election = _settings("--leader-election", "--leader-election-lease-duration", "30",
                         "--leader-election-renew-deadline", "20", "--leader-election-retry-period", "4").leader_election
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (30, 20, 4)
    default = _settings().leader_election
    assert (default.lease_duration, default.renew_deadline, default.retry_period) == (15, 10, 2)


def test_timings_out_of_order_are_refused_with_the_flags_named() -> None:
    with pytest.raises(SystemExit, match="--leader-election-.*retry period < renew deadline < lease duration"):
        _settings("--leader-election-renew-deadline", "20")
