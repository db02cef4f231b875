"""May this namespace adopt or import an instance the operator did not launch? Pure.

Adoption (``spec.instanceId``) and import (a CMLWorkerDiscovery) hand an existing
instance to whoever can create a CMLWorker in a namespace; on a shared cluster that is
every tenant. So it is the administrator's decision, per namespace: the operator's
``--adoption-namespaces`` (env ``CML_ADOPTION_NAMESPACES``) lists the namespaces that
may, ``*`` allows all, and the default (empty) allows none. A refused worker is
Stalled ``AdoptionNotAllowed`` and its instance gets reads only: no tag, no stop, no
terminate, not even on delete.
"""

from __future__ import annotations

from collections.abc import Iterable

ADOPTION_FLAG = "--adoption-namespaces"
ADOPTION_ENV = "CML_ADOPTION_NAMESPACES"
ALL_NAMESPACES = "*"


def parse_adoption_namespaces(raw: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; ``"*"`` -> ``("*",)``; ``""`` -> ``()`` (nobody may adopt)."""
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    return (ALL_NAMESPACES,) if ALL_NAMESPACES in names else names


def adoption_allowed(namespace: str, allowed: Iterable[str]) -> bool:
    allowed = tuple(allowed)
    return ALL_NAMESPACES in allowed or namespace in allowed


def refusal_message(what: str, namespace: str) -> str:
    """Why ``what`` (``instance i-...`` or ``import``) is refused, naming the flag that would allow it."""
    return (f"Adopting {what} is not allowed in namespace {namespace}: adoption and import of instances the "
            f"operator did not launch are an administrator's decision; add the namespace to the operator's "
            f"{ADOPTION_FLAG} ({ADOPTION_ENV}, Helm value adoptionNamespaces). Nothing was changed on the instance")
