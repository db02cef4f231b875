"""The fault proxy's IAM evaluator against AWS's documented evaluation logic and condition examples.

Sources: IAM User Guide, "Policy evaluation logic" (explicit deny, default deny), "Condition
operators" (String*, Null, Bool, ...IfExists, missing keys), "Multivalued context keys"
(ForAllValues / ForAnyValue, including the empty-set cases) and "Creating a condition with
multiple context keys or values" (AND between keys and operators, OR between values).
"""

from __future__ import annotations

import pytest

from tests.support.iam import Decision, Policy, Request, UnsupportedCondition, evaluate, evaluate_all

INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123"


def policy(*statements: dict) -> Policy:
    return Policy.from_document({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action="*", resource="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def test_nothing_allowed_is_an_implicit_deny():
    assert evaluate([], Request("ec2:StopInstances", INSTANCE)) is Decision.IMPLICIT_DENY
    assert evaluate([policy(allow("ec2:StartInstances"))], Request("ec2:StopInstances", INSTANCE)) \
        is Decision.IMPLICIT_DENY


def test_an_explicit_deny_wins_over_any_allow_in_any_policy():
    deny = policy({"Effect": "Deny", "Action": "ec2:*", "Resource": "*"})
    assert evaluate([policy(allow()), deny], Request("ec2:StopInstances", INSTANCE)) is Decision.EXPLICIT_DENY


def test_actions_match_wildcards_case_insensitively_and_resources_case_sensitively():
    statement = allow("ec2:Stop*", "arn:aws:ec2:*:*:instance/i-0???")
    assert evaluate([policy(statement)], Request("EC2:stopinstances", INSTANCE)) is Decision.ALLOW
    assert evaluate([policy(statement)], Request("ec2:StopInstances", INSTANCE.upper())) is Decision.IMPLICIT_DENY
    assert evaluate([policy(statement)], Request("ec2:StopInstances", INSTANCE + "5")) is Decision.IMPLICIT_DENY


def test_not_action_and_not_resource_match_everything_else():
    statement = {"Effect": "Allow", "NotAction": "ec2:Terminate*", "NotResource": "arn:aws:ec2:*:*:volume/*"}
    assert evaluate([policy(statement)], Request("ec2:StopInstances", INSTANCE)) is Decision.ALLOW
    assert evaluate([policy(statement)], Request("ec2:TerminateInstances", INSTANCE)) is Decision.IMPLICIT_DENY
    assert evaluate([policy(statement)], Request("ec2:StopInstances", "arn:aws:ec2:r:a:volume/v")) \
        is Decision.IMPLICIT_DENY


MANAGED = {"StringEquals": {"ec2:ResourceTag/cml.dev/managed-by": "cml-operator",
                            "ec2:ResourceTag/cml.dev/cluster": "c1"}}


def test_keys_of_one_operator_must_all_match():
    stmt = policy(allow(Condition=MANAGED))
    both = {"ec2:ResourceTag/cml.dev/managed-by": ["cml-operator"], "ec2:ResourceTag/cml.dev/cluster": ["c1"]}
    assert evaluate([stmt], Request("ec2:StopInstances", INSTANCE, both)) is Decision.ALLOW
    one = {"ec2:ResourceTag/cml.dev/cluster": ["c1"]}
    assert evaluate([stmt], Request("ec2:StopInstances", INSTANCE, one)) is Decision.IMPLICIT_DENY
    wrong = {**both, "ec2:ResourceTag/cml.dev/cluster": ["c2"]}
    assert evaluate([stmt], Request("ec2:StopInstances", INSTANCE, wrong)) is Decision.IMPLICIT_DENY


def test_values_of_one_key_are_alternatives_and_condition_keys_ignore_case():
    stmt = policy(allow(Condition={"StringEquals": {"aws:RequestTag/Team": ["a", "b"]}}))
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {"AWS:requesttag/team": ["b"]})) is Decision.ALLOW
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {"aws:RequestTag/Team": ["B"]})) \
        is Decision.IMPLICIT_DENY  # values are case-sensitive for StringEquals
    ignore = policy(allow(Condition={"StringEqualsIgnoreCase": {"aws:RequestTag/Team": "b"}}))
    assert evaluate([ignore], Request("ec2:CreateTags", INSTANCE, {"aws:RequestTag/Team": ["B"]})) is Decision.ALLOW


def test_operators_of_one_block_must_all_hold():
    stmt = policy(allow(Condition={"StringEquals": {"aws:RequestTag/a": "1"}, "Null": {"aws:RequestTag/b": "false"}}))
    assert evaluate([stmt], Request("x:Y", INSTANCE, {"aws:RequestTag/a": ["1"], "aws:RequestTag/b": ["z"]})) \
        is Decision.ALLOW
    assert evaluate([stmt], Request("x:Y", INSTANCE, {"aws:RequestTag/a": ["1"]})) is Decision.IMPLICIT_DENY


def test_null_checks_whether_a_key_is_present():
    absent = policy(allow(Condition={"Null": {"ec2:ResourceTag/cml.dev/worker-uid": "true"}}))
    present = policy(allow(Condition={"Null": {"ec2:ResourceTag/cml.dev/worker-uid": "false"}}))
    tagged = Request("x:Y", INSTANCE, {"ec2:ResourceTag/cml.dev/worker-uid": ["u"]})
    bare = Request("x:Y", INSTANCE, {})
    assert (evaluate([absent], bare), evaluate([absent], tagged)) == (Decision.ALLOW, Decision.IMPLICIT_DENY)
    assert (evaluate([present], tagged), evaluate([present], bare)) == (Decision.ALLOW, Decision.IMPLICIT_DENY)


def test_a_missing_key_fails_positive_operators_and_satisfies_negated_ones_and_if_exists():
    bare = Request("x:Y", INSTANCE, {})
    assert evaluate([policy(allow(Condition={"StringEquals": {"aws:RequestTag/a": "1"}}))], bare) \
        is Decision.IMPLICIT_DENY
    assert evaluate([policy(allow(Condition={"StringNotEquals": {"aws:RequestTag/a": "1"}}))], bare) is Decision.ALLOW
    assert evaluate([policy(allow(Condition={"StringEqualsIfExists": {"aws:RequestTag/a": "1"}}))], bare) \
        is Decision.ALLOW
    other = Request("x:Y", INSTANCE, {"aws:RequestTag/a": ["2"]})
    assert evaluate([policy(allow(Condition={"StringEqualsIfExists": {"aws:RequestTag/a": "1"}}))], other) \
        is Decision.IMPLICIT_DENY


def test_string_like_matches_wildcards_and_not_like_negates():
    like = policy(allow(Condition={"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}))
    assert evaluate([like], Request("kms:Decrypt", "*", {"kms:ViaService": ["ec2.us-east-1.amazonaws.com"]})) \
        is Decision.ALLOW
    assert evaluate([like], Request("kms:Decrypt", "*", {"kms:ViaService": ["s3.us-east-1.amazonaws.com"]})) \
        is Decision.IMPLICIT_DENY
    unlike = policy(allow(Condition={"StringNotLike": {"aws:RequestTag/a": "x*"}}))
    assert evaluate([unlike], Request("x:Y", "*", {"aws:RequestTag/a": ["xyz"]})) is Decision.IMPLICIT_DENY


def test_for_all_values_holds_for_subsets_and_for_the_empty_set():
    stmt = policy(allow(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["team", "env"]}}))
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {"aws:TagKeys": ["team"]})) is Decision.ALLOW
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {"aws:TagKeys": ["team", "owner"]})) \
        is Decision.IMPLICIT_DENY
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {})) is Decision.ALLOW  # documented pitfall


def test_for_any_value_needs_one_match_and_fails_without_the_key():
    stmt = policy(allow(Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["team"]}}))
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {"aws:TagKeys": ["owner", "team"]})) \
        is Decision.ALLOW
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {"aws:TagKeys": ["owner"]})) \
        is Decision.IMPLICIT_DENY
    assert evaluate([stmt], Request("ec2:CreateTags", INSTANCE, {})) is Decision.IMPLICIT_DENY


def test_bool_compares_true_and_false():
    stmt = policy(allow(Condition={"Bool": {"kms:GrantIsForAWSResource": "true"}}))
    assert evaluate([stmt], Request("kms:CreateGrant", "*", {"kms:GrantIsForAWSResource": ["true"]})) \
        is Decision.ALLOW
    assert evaluate([stmt], Request("kms:CreateGrant", "*", {"kms:GrantIsForAWSResource": ["false"]})) \
        is Decision.IMPLICIT_DENY


def test_policy_variables_take_the_request_context_value():
    stmt = policy(allow("ec2:RunInstances", "arn:aws:ec2:*::image/*",
                        Condition={"StringEquals": {"ec2:Owner": ["${aws:PrincipalAccount}"]}}))
    own = Request("ec2:RunInstances", "arn:aws:ec2:us-east-1::image/ami-1",
                  {"ec2:Owner": ["123456789012"], "aws:PrincipalAccount": ["123456789012"]})
    assert evaluate([stmt], own) is Decision.ALLOW
    foreign = Request(own.action, own.resource, {**own.context, "ec2:Owner": ["amazon"]})
    assert evaluate([stmt], foreign) is Decision.IMPLICIT_DENY
    unknown = Request(own.action, own.resource, {"ec2:Owner": ["123456789012"]})
    assert evaluate([stmt], unknown) is Decision.IMPLICIT_DENY


def test_a_call_on_several_resources_needs_every_one_allowed():
    stmt = policy(allow("ec2:RunInstances", "arn:aws:ec2:*:*:instance/*"))
    requests = [Request("ec2:RunInstances", INSTANCE), Request("ec2:RunInstances", "arn:aws:ec2:r:a:subnet/s")]
    decision, denied = evaluate_all([stmt], requests)
    assert decision is Decision.IMPLICIT_DENY and denied == requests[1]
    assert evaluate_all([stmt], requests[:1]) == (Decision.ALLOW, None)


def test_an_operator_it_does_not_know_is_refused_not_ignored():
    stmt = policy(allow(Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}))
    with pytest.raises(UnsupportedCondition, match="DateGreaterThan"):
        evaluate([stmt], Request("x:Y", "*"))


def test_the_shipped_policies_use_only_supported_operators(tmp_path):
    from tests.support.iam import Policy as P
    from pathlib import Path
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    for name in ("iam-policy.json", "iam-policy-adoption.json", "iam-policy-kms.json"):
        loaded = P.load(deploy / name, {"CLUSTER_ID": "c1"})
        for statement in loaded.statements:  # evaluating touches every operator of every statement
            evaluate([P((statement,))], Request("ec2:RunInstances", "*"))
