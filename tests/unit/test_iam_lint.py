"""The shipped IAM policies pass parliament (duo-labs' IAM linter), as `make test` runs it.

parliament reports RESOURCE_MISMATCH for a statement that names only some of an action's
resource types; the project splits RunInstances (and ModifyInstanceAttribute) across
statements on purpose, so each type gets its own condition. Such a finding is accepted only
when another statement of the same policy does allow that action on the missing type.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from parliament import analyze_policy_string

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
POLICIES = ("iam-policy.json", "iam-policy-adoption.json", "iam-policy-kms.json", "iam-policy-assume.json")


def _resource_type(arn: str) -> str:
    return arn.rsplit(":", 1)[-1].split("/", 1)[0]


def _covered_elsewhere(document: dict, action: str, required_format: str) -> bool:
    wanted = _resource_type(required_format)
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if action in actions and any(r == "*" or _resource_type(r) == wanted for r in resources):
            return True
    return False


def unexplained_findings(text: str) -> list[str]:
    document = json.loads(text)
    problems = []
    for finding in analyze_policy_string(text).findings:
        if finding.issue == "RESOURCE_MISMATCH" and all(
                _covered_elsewhere(document, item["action"], item["required_format"]) for item in finding.detail):
            continue
        problems.append(f"{finding.issue} at {finding.location}: {finding.detail}")
    return problems


@pytest.mark.parametrize("name", POLICIES)
def test_parliament_finds_nothing_wrong_with_the_shipped_policy(name):
    assert unexplained_findings((DEPLOY / name).read_text()) == []


def test_the_lint_fails_a_policy_with_a_mistake():
    broken = json.loads((DEPLOY / "iam-policy.json").read_text())
    broken["Statement"][0]["Action"].append("ec2:DescribeInstancez")  # an action that does not exist
    del broken["Statement"][2]  # the subnet/group/... resources of RunInstances: now uncovered
    problems = unexplained_findings(json.dumps(broken))
    assert any("UNKNOWN_ACTION" in p for p in problems), problems
    assert any("RESOURCE_MISMATCH" in p and "subnet" in p for p in problems), problems
