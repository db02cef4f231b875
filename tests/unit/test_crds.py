"""The pool and discovery CRDs' worker schemas are generated from the CMLWorker CRD and must not drift from it."""

from __future__ import annotations

import yaml

from tests.support import crdgen


def _template_spec(pool_crd: dict) -> dict:
    schema = pool_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]


def test_committed_crds_match_what_make_crds_generates():
    for path, wanted in crdgen.generate().items():
        assert path.read_text() == wanted, f"{path.name} is out of date: run `make crds`"


def test_template_carries_every_worker_spec_field_and_no_transition_rule():
    worker = yaml.safe_load(crdgen.WORKER_CRD.read_text())
    pool = yaml.safe_load(crdgen.POOL_CRD.read_text())
    worker_spec = worker["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    template = _template_spec(pool)
    assert set(template["properties"]) == set(worker_spec["properties"])
    assert template["required"] == worker_spec["required"]
    assert "oldSelf" not in yaml.safe_dump(template)
    assert "oldSelf" in yaml.safe_dump(worker_spec)  # the worker keeps its own immutability rules


def test_a_new_worker_field_shows_up_in_the_template_only_after_regeneration():
    worker = yaml.safe_load(crdgen.WORKER_CRD.read_text())
    worker["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["newField"] = {
        "type": "string", "description": "x", "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "spec.newField is immutable"},
            {"rule": "size(self) < 5", "message": "spec.newField is short"}]}
    text = crdgen.render(crdgen.POOL_CRD.read_text(), crdgen.worker_spec_schema(worker))
    assert text != crdgen.POOL_CRD.read_text()
    new_field = _template_spec(yaml.safe_load(text))["properties"]["newField"]
    assert new_field["x-kubernetes-validations"] == [
        {"rule": "size(self) < 5", "message": "spec.template.spec.newField is short"}]


def test_discovery_copies_the_cml_block_when_the_worker_has_one():
    worker = yaml.safe_load(crdgen.WORKER_CRD.read_text())
    properties = worker["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    properties["cml"] = {"type": "object", "description": "CML", "x-kubernetes-validations": [
        {"rule": "self.a == oldSelf.a", "message": "spec.cml.a is immutable"},
        {"rule": "has(self.a)", "message": "spec.cml.a is required"}]}
    assert crdgen.discovery_fields(worker) == {"cml": {"type": "object", "description": "CML", "x-kubernetes-validations": [
        {"rule": "has(self.a)", "message": "spec.workerTemplate.spec.cml.a is required"}]}}
