"""A small offline evaluator of AWS IAM identity policies, for the fault proxy's IAM enforcement.

No maintained evaluator on PyPI evaluates a request context (condition keys, resource ARNs)
offline on Python 3.11, so this one is limited to what the project's policies use, following
AWS's documented evaluation logic ("Policy evaluation logic", "IAM JSON policy elements:
Condition operators", "Condition with multiple keys or values"):

* an explicit Deny in any statement wins; else an Allow that matches allows; else the
  request is implicitly denied (default deny);
* Action / NotAction and Resource / NotResource match with ``*`` and ``?`` wildcards
  (actions case-insensitively, resources case-sensitively);
* in a Condition block every operator must hold (AND), every key of an operator must hold
  (AND), and any one of a key's values may match (OR);
* a key missing from the request makes a positive operator false and a negated one
  (StringNotEquals, StringNotLike, ArnNotLike) true; ``...IfExists`` makes it true;
* ``ForAllValues:`` holds when every request value matches (also when there are none),
  ``ForAnyValue:`` when at least one does;
* operators: StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase,
  StringLike, StringNotLike, ArnEquals, ArnLike, ArnNotEquals, ArnNotLike, Bool, Null;
  an operator not listed raises ``UnsupportedCondition`` (never a silent allow);
* condition keys are case-insensitive; ``${aws:PrincipalAccount}``-style policy variables are
  replaced from the request context (a missing one makes that value match nothing).

A request is one action on one resource: an API call that touches several resources
(RunInstances: the instance, its volume, image, subnet, groups) is allowed only if every
(action, resource) pair is, as AWS authorizes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class UnsupportedCondition(ValueError):
    """The policy uses a condition operator this evaluator does not implement."""


class Decision(str, Enum):
    ALLOW = "Allow"
    EXPLICIT_DENY = "ExplicitDeny"
    IMPLICIT_DENY = "ImplicitDeny"


@dataclass(frozen=True)
class Request:
    """One action on one resource, with its request context (condition key -> values)."""

    action: str  # "ec2:StopInstances"
    resource: str  # an ARN, or "*"
    context: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def values(self, key: str) -> list[str] | None:
        """The key's values, or None when the request context does not have it (keys are case-insensitive)."""
        wanted = key.lower()
        for name, values in self.context.items():
            if name.lower() == wanted:
                return [values] if isinstance(values, str) else list(values)
        return None


@dataclass(frozen=True)
class Policy:
    """An identity policy document (its Statement list), with placeholders already substituted."""

    statements: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Policy:
        statements = document.get("Statement", [])
        return cls(tuple([statements] if isinstance(statements, Mapping) else statements))

    @classmethod
    def load(cls, path: Path, placeholders: Mapping[str, str] | None = None) -> Policy:
        """Read a policy file, replacing each placeholder (say CLUSTER_ID) as docs/install.md's sed does."""
        text = path.read_text()
        for name, value in (placeholders or {}).items():
            text = text.replace(name, value)
        return cls.from_document(json.loads(text))


def evaluate(policies: Iterable[Policy], request: Request) -> Decision:
    """AWS's decision for one identity-policy request: explicit deny > allow > implicit deny."""
    allowed = False
    for policy in policies:
        for statement in policy.statements:
            if not _statement_applies(statement, request):
                continue
            if statement.get("Effect") == "Deny":
                return Decision.EXPLICIT_DENY
            if statement.get("Effect") == "Allow":
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def evaluate_all(policies: Sequence[Policy], requests: Iterable[Request]) -> tuple[Decision, Request | None]:
    """Every request must be allowed; the first one that is not, with its decision (explicit deny first)."""
    worst: tuple[Decision, Request | None] = (Decision.ALLOW, None)
    for request in requests:
        decision = evaluate(policies, request)
        if decision is Decision.EXPLICIT_DENY:
            return decision, request
        if decision is Decision.IMPLICIT_DENY and worst[0] is Decision.ALLOW:
            worst = (decision, request)
    return worst


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        if not any(_match(p, request.action, ignore_case=True) for p in _as_list(statement["Action"])):
            return False
    elif "NotAction" in statement:
        if any(_match(p, request.action, ignore_case=True) for p in _as_list(statement["NotAction"])):
            return False
    else:
        return False
    if "Resource" in statement:
        if not any(_resource_match(p, request) for p in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(_resource_match(p, request) for p in _as_list(statement["NotResource"])):
            return False
    return _conditions_hold(statement.get("Condition", {}), request)


def _match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcards: * any run of characters, ? one character (fnmatch's [] does not exist in IAM)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _resource_match(pattern: str, request: Request) -> bool:
    if pattern == "*":
        return True
    substituted = _substitute(pattern, request)
    return substituted is not None and (request.resource == "*" or _match(substituted, request.resource))


_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _substitute(value: str, request: Request) -> str | None:
    """Replace ``${key}`` with the request's (single) value; None if a variable has none."""
    missing = False

    def one(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1)
        if name in ("*", "?", "$"):  # ${*} ${?} ${$}: the literal characters
            return name
        values = request.values(name)
        if not values:
            missing = True
            return ""
        return values[0]

    result = _VARIABLE.sub(one, value)
    return None if missing else result


_NEGATED = frozenset({"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"})


def _value_matches(operator: str, policy_value: str, request_value: str) -> bool:
    """A positive comparison of one policy value with one request value (negation applied by the caller)."""
    base = operator.replace("Not", "", 1) if operator in _NEGATED else operator
    if base == "StringEquals":
        return policy_value == request_value
    if base == "StringEqualsIgnoreCase":
        return policy_value.lower() == request_value.lower()
    if base in ("StringLike", "ArnLike", "ArnEquals"):
        return _match(policy_value, request_value)
    if base == "Bool":
        return policy_value.lower() == request_value.lower()
    raise UnsupportedCondition(f"condition operator {operator!r} is not implemented by tests/support/iam.py")


_OPERATORS = frozenset({"StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
                        "StringLike", "StringNotLike", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike", "Bool",
                        "Null"})


def _conditions_hold(block: Mapping[str, Mapping[str, Any]], request: Request) -> bool:
    return all(_operator_holds(name, keys, request) for name, keys in block.items())


def _operator_holds(name: str, keys: Mapping[str, Any], request: Request) -> bool:
    quantifier, _, operator = name.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    if operator not in _OPERATORS or quantifier not in ("", "ForAllValues", "ForAnyValue"):
        raise UnsupportedCondition(f"condition operator {name!r} is not implemented by tests/support/iam.py")
    for key, raw in keys.items():
        present = request.values(key)
        if operator == "Null":
            if not all(_null_holds(v, present) for v in _as_list(raw)):
                return False
            continue
        policy_values = [v for v in (_substitute(str(v), request) for v in _as_list(raw)) if v is not None]
        if not _key_holds(operator, quantifier, if_exists, policy_values, present):
            return False
    return True


def _null_holds(policy_value: str, present: list[str] | None) -> bool:
    absent = not present
    return absent if str(policy_value).lower() == "true" else not absent


def _key_holds(operator: str, quantifier: str, if_exists: bool, policy_values: list[str],
               present: list[str] | None) -> bool:
    negated = operator in _NEGATED

    def one(value: str) -> bool:
        hit = any(_value_matches(operator, p, value) for p in policy_values)
        return not hit if negated else hit

    if quantifier == "ForAllValues":
        return all(one(v) for v in present or [])
    if quantifier == "ForAnyValue":
        return any(one(v) for v in present or [])
    if present is None:
        return if_exists or negated
    # A single-valued key: the request's (first) value; negated operators: it matches none of the values.
    return one(present[0])
