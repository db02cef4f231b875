"""Generate the CMLWorker schema inside the pool CRD from crds/cmlworker.yaml (``make crds``).

``crds/cmlworkerpool.yaml`` keeps its hand-written parts; only the block between the
``BEGIN GENERATED`` and ``END GENERATED`` markers under ``spec.template.spec`` is
rewritten. The copy drops transition rules (CEL using ``oldSelf``): a template has no
old value to compare with, and immutability there means "affects new children only".

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
_BLOCK = re.compile(r"^(?P<indent> *)# BEGIN GENERATED[^\n]*\n(?P<body>.*?)^(?P=indent)# END GENERATED[^\n]*\n",
                    re.MULTILINE | re.DOTALL)


def worker_spec_schema(worker_crd: dict[str, Any]) -> dict[str, Any]:
    """The CMLWorker spec schema of the served version, as a template may hold it."""
    version = next(v for v in worker_crd["spec"]["versions"] if v.get("storage"))
    return for_template(without_transition_rules(copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["spec"])))


def for_template(schema: Any) -> Any:
    """Say what a rule or an immutable field means in a pool: field paths gain ``template.spec``."""
    if isinstance(schema, list):
        return [for_template(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {}
    for key, value in schema.items():
        if key == "message" and isinstance(value, str):
            value = re.sub(r"\bspec\.", "spec.template.spec.", value)
        elif key == "description" and isinstance(value, str):
            value = re.sub(r"Immutable( once set)?\.", "Immutable on a CMLWorker: in a pool a change reaches new children only.",
                           value)
        result[key] = for_template(value)
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
        raise ValueError(f"{POOL_CRD.name}: no BEGIN/END GENERATED block")
    indent = match.group("indent")
    dumped = yaml.safe_dump(spec_schema, sort_keys=False, width=10_000, allow_unicode=True)
    body = "".join(f"{indent}{line}\n" if line else "\n" for line in dumped.splitlines())
    begin, end = match.group(0).splitlines()[0], match.group(0).splitlines()[-1]
    return pool_text[:match.start()] + f"{begin}\n{body}{end}\n" + pool_text[match.end():]


def generate() -> str:
    worker = yaml.safe_load(WORKER_CRD.read_text())
    return render(POOL_CRD.read_text(), worker_spec_schema(worker))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if crds/cmlworkerpool.yaml is out of date")
    args = parser.parse_args(argv)
    wanted = generate()
    if args.check:
        if wanted != POOL_CRD.read_text():
            print(f"{POOL_CRD.relative_to(REPO)} is out of date: run `make crds`", file=sys.stderr)
            return 1
        return 0
    POOL_CRD.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
