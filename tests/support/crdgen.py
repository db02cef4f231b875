"""Generate the CMLWorker schema inside the pool and discovery CRDs from crds/cmlworker.yaml (``make crds``).

Each CRD keeps its hand-written parts; only the block between the ``BEGIN GENERATED``
and ``END GENERATED`` markers is rewritten: the whole worker spec under a pool's
``spec.template.spec``, and ``cml`` under a discovery's ``spec.workerTemplate.spec``.
The copy drops transition rules (CEL using ``oldSelf``): a template has no old value
to compare with, and immutability there means "affects new children only".

    python -m tests.support.crdgen           rewrite the generated block
    python -m tests.support.crdgen --check   exit 1 if the committed file is out of date
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKER_CRD = REPO / "crds" / "cmlworker.yaml"
POOL_CRD = REPO / "crds" / "cmlworkerpool.yaml"
DISCOVERY_CRD = REPO / "crds" / "cmlworkerdiscovery.yaml"
#: Worker spec fields a discovery's workerTemplate.spec copies (the rest come from the instance).
DISCOVERY_FIELDS = ("cml",)
_BLOCK = re.compile(r"^(?P<indent> *)# BEGIN GENERATED[^\n]*\n(?P<body>.*?)^(?P=indent)# END GENERATED[^\n]*\n",
                    re.MULTILINE | re.DOTALL)


def _raw_worker_spec(worker_crd: dict[str, Any]) -> dict[str, Any]:
    version = next(v for v in worker_crd["spec"]["versions"] if v.get("storage"))
    return without_transition_rules(copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["spec"]))


def worker_spec_schema(worker_crd: dict[str, Any]) -> dict[str, Any]:
    """The CMLWorker spec schema of the stored version, as a pool template holds it."""
    return for_template(_raw_worker_spec(worker_crd))


def discovery_fields(worker_crd: dict[str, Any]) -> dict[str, Any]:
    """The worker spec properties a discovery's workerTemplate.spec holds ({} when the worker has none)."""
    properties = _raw_worker_spec(worker_crd)["properties"]
    picked = {name: properties[name] for name in DISCOVERY_FIELDS if name in properties}
    return for_template(picked, "spec.workerTemplate.spec.", pool=False)


def for_template(schema: Any, path: str = "spec.template.spec.", pool: bool = True) -> Any:
    """Say what a rule or an immutable field means in a template: messages name the field at ``path``."""
    if isinstance(schema, list):
        return [for_template(item, path, pool) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {}
    for key, value in schema.items():
        if key == "message" and isinstance(value, str):
            value = re.sub(r"\bspec\.", path, value)
        elif key == "description" and isinstance(value, str) and pool:
            value = re.sub(r"Immutable( once set)?\.",
                           "Immutable on a CMLWorker: in a pool a change reaches new children only.", value)
        result[key] = for_template(value, path, pool)
    return result


def without_transition_rules(schema: Any) -> Any:
    """Drop every ``x-kubernetes-validations`` rule that reads ``oldSelf`` (and the key when none is left)."""
    if isinstance(schema, list):
        return [without_transition_rules(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {}
    for key, value in schema.items():
        if key == "x-kubernetes-validations":
            kept = [rule for rule in value if "oldSelf" not in rule.get("rule", "")]
            if kept:
                result[key] = kept
            continue
        result[key] = without_transition_rules(value)
    return result


def render(pool_text: str, spec_schema: dict[str, Any]) -> str:
    """``pool_text`` with the generated block replaced by ``spec_schema``."""
    match = _BLOCK.search(pool_text)
    if match is None:
        raise ValueError("no BEGIN/END GENERATED block")
    indent = match.group("indent")
    dumped = yaml.safe_dump(spec_schema, sort_keys=False, width=10_000, allow_unicode=True) if spec_schema else ""
    body = "".join(f"{indent}{line}\n" if line else "\n" for line in dumped.splitlines())
    begin, end = match.group(0).splitlines()[0], match.group(0).splitlines()[-1]
    return pool_text[:match.start()] + f"{begin}\n{body}{end}\n" + pool_text[match.end():]


def generate() -> dict[Path, str]:
    """Each generated CRD file and the text it should have."""
    worker = yaml.safe_load(WORKER_CRD.read_text())
    return {POOL_CRD: render(POOL_CRD.read_text(), worker_spec_schema(worker)),
            DISCOVERY_CRD: render(DISCOVERY_CRD.read_text(), discovery_fields(worker))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated CRD is out of date")
    args = parser.parse_args(argv)
    stale = 0
    for path, wanted in generate().items():
        if wanted == path.read_text():
            continue
        if args.check:
            print(f"{path.relative_to(REPO)} is out of date: run `make crds`", file=sys.stderr)
            stale += 1
        else:
            path.write_text(wanted)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
