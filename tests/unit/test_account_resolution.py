"""Which account a worker uses (reconcile/account.py): pure decisions, every branch."""

from __future__ import annotations

from cml_operator.reconcile import reasons
from cml_operator.reconcile.account import (
    OWN_IDENTITY,
    AccountSpec,
    LabelSelector,
    Refusal,
    Subject,
    UseAccount,
    recorded_account,
    resolve_account,
)


def account(name: str, **labels: str) -> AccountSpec:
    return AccountSpec.from_body({"metadata": {"name": name}, "spec": {
        "roleArn": f"arn:aws:iam::111111111111:role/{name}", "namespaceSelector": {"matchLabels": labels}}})


TEAM_A = account("team-a", team="a")
TEAM_B = account("team-b", team="b")
ALSO_A = account("also-a", team="a")


def subject(labels: dict[str, str] | None = None, requested: str | None = None, **kw) -> Subject:
    return Subject("CMLWorker", "lab", labels if labels is not None else {"team": "a"}, requested, **kw)


def test_the_one_account_selecting_the_namespace_is_used():
    assert resolve_account(subject(), [TEAM_A, TEAM_B], require_account=False) == UseAccount(TEAM_A)


def test_no_account_selecting_falls_back_to_the_operator_identity():
    assert resolve_account(subject({"team": "c"}), [TEAM_A], require_account=False) == UseAccount(None)


def test_require_account_refuses_the_operator_identity():
    decision = resolve_account(subject({"team": "c"}), [TEAM_A], require_account=True)
    assert isinstance(decision, Refusal) and decision.reason == reasons.ACCOUNT_NOT_ALLOWED
    assert "--require-account" in decision.message and "lab" in decision.message


def test_several_accounts_selecting_and_none_named_is_ambiguous():
    decision = resolve_account(subject(), [TEAM_A, ALSO_A], require_account=False)
    assert isinstance(decision, Refusal) and decision.reason == reasons.ACCOUNT_AMBIGUOUS
    assert "also-a, team-a" in decision.message


def test_naming_one_of_several_resolves_the_ambiguity():
    assert resolve_account(subject(requested="also-a"), [TEAM_A, ALSO_A], require_account=False) == UseAccount(ALSO_A)


def test_a_named_account_that_does_not_select_the_namespace_is_refused():
    decision = resolve_account(subject(requested="team-b"), [TEAM_A, TEAM_B], require_account=False)
    assert isinstance(decision, Refusal) and decision.reason == reasons.ACCOUNT_NOT_ALLOWED
    assert "team-b" in decision.message and "namespaceSelector" in decision.message


def test_a_named_account_that_does_not_exist_is_refused():
    decision = resolve_account(subject(requested="nope"), [TEAM_A], require_account=False)
    assert isinstance(decision, Refusal) and decision.reason == reasons.ACCOUNT_NOT_ALLOWED


def test_an_empty_selector_selects_no_namespace():
    open_to_none = AccountSpec.from_body({"metadata": {"name": "x"}, "spec": {"roleArn": "arn"}})
    assert resolve_account(subject(), [open_to_none], require_account=False) == UseAccount(None)


def test_a_region_outside_the_allow_list_is_refused():
    eu_only = AccountSpec.from_body({"metadata": {"name": "eu"}, "spec": {
        "roleArn": "arn", "regions": ["eu-west-1"], "namespaceSelector": {"matchLabels": {"team": "a"}}}})
    decision = resolve_account(subject(region="us-east-1"), [eu_only], require_account=False)
    assert isinstance(decision, Refusal) and "eu-west-1" in decision.message
    assert resolve_account(subject(region="eu-west-1"), [eu_only], require_account=False) == UseAccount(eu_only)


def test_a_launched_worker_stays_in_its_account_even_when_another_selects_its_namespace_now():
    # Launched with the operator's identity; an account selecting the namespace appeared since.
    assert resolve_account(subject(recorded=OWN_IDENTITY), [TEAM_A], require_account=True) == UseAccount(None)
    # Launched in team-a; a second account selecting the namespace would make a fresh worker ambiguous.
    assert resolve_account(subject(recorded="team-a"), [TEAM_A, ALSO_A], require_account=False) == UseAccount(TEAM_A)


def test_a_launched_worker_whose_account_stopped_selecting_it_is_refused_but_may_still_be_deleted():
    decision = resolve_account(subject({"team": "b"}, recorded="team-a"), [TEAM_A], require_account=False)
    assert isinstance(decision, Refusal) and decision.reason == reasons.ACCOUNT_NOT_ALLOWED
    assert resolve_account(subject({"team": "b"}, recorded="team-a", deleting=True), [TEAM_A],
                           require_account=False) == UseAccount(TEAM_A)


def test_a_launched_worker_cannot_switch_accounts():
    decision = resolve_account(subject(requested="also-a", recorded="team-a"), [TEAM_A, ALSO_A],
                               require_account=False)
    assert isinstance(decision, Refusal) and "cannot change" in decision.message


def test_recorded_account_reads_status():
    assert recorded_account({"account": {"name": "team-a", "id": "1"}}, launched=True) == "team-a"
    assert recorded_account({}, launched=True) == OWN_IDENTITY
    assert recorded_account(None, launched=False) is None


def test_label_selector_expressions():
    selector = LabelSelector.from_dict({"matchExpressions": [
        {"key": "team", "operator": "In", "values": ["a", "b"]},
        {"key": "frozen", "operator": "DoesNotExist"},
        {"key": "tier", "operator": "NotIn", "values": ["prod"]},
        {"key": "cml", "operator": "Exists"}]})
    assert selector.selects({"team": "a", "cml": ""})
    assert not selector.selects({"team": "c", "cml": ""})
    assert not selector.selects({"team": "a", "cml": "", "frozen": "1"})
    assert not selector.selects({"team": "a", "cml": "", "tier": "prod"})
    assert not selector.selects({"team": "a"})
    assert not LabelSelector.from_dict({"matchExpressions": [{"key": "k", "operator": "Bogus"}]}).selects({"k": "v"})
