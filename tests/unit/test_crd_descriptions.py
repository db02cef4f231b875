"""Every field of every CRD in crds/ has a description, so `kubectl explain` documents it.

`kubectl explain cmlworker.spec --recursive` is where people look first; a field without
a description shows an empty line there. New fields get one in the same change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))


def crds() -> list[dict]:
    docs = [doc for path in CRD_FILES for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in docs if doc.get("kind") == "CustomResourceDefinition"]


def undescribed(schema: dict, path: str, root: bool = True) -> Iterator[str]:
    """Paths of properties (at any depth, through arrays and maps) that lack a non-empty description.

    The root's `metadata` is exempt: the API server rejects a CRD that says anything about it but
    its type, and kubectl explain shows ObjectMeta's own documentation there.
    """
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        if root and name == "metadata":
            continue
        if not str(prop.get("description", "")).strip():
            yield here
        yield from undescribed(prop, here, root=False)
    if isinstance(schema.get("items"), dict):
        yield from undescribed(schema["items"], f"{path}[]", root=False)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from undescribed(schema["additionalProperties"], f"{path}{{}}", root=False)


def schemas() -> list[tuple[str, dict]]:
    return [(f"{crd['spec']['names']['kind']}/{version['name']}", version["schema"]["openAPIV3Schema"])
            for crd in crds() for version in crd["spec"]["versions"]]


def test_there_are_crds_with_fields() -> None:
    assert schemas(), "no CRD found in crds/"
    assert any("spec" in schema.get("properties", {}) for _, schema in schemas())


@pytest.mark.parametrize(("name", "schema"), schemas(), ids=[name for name, _ in schemas()])
def test_every_field_has_a_description(name: str, schema: dict) -> None:
    missing = list(undescribed(schema, name))
    assert not missing, "fields without a description (kubectl explain shows nothing):\n" + "\n".join(missing)


def test_the_walk_finds_fields_nested_in_arrays_and_maps() -> None:
    schema = {"properties": {
        "metadata": {"type": "object"},
        "a": {"description": "ok", "type": "array", "items": {"properties": {"b": {"type": "string"}}}},
        "c": {"type": "object", "additionalProperties": {"properties": {"d": {"description": " "}}}},
    }}
    assert list(undescribed(schema, "X")) == ["X.a[].b", "X.c", "X.c{}.d"]


@pytest.mark.parametrize(("name", "schema"), schemas(), ids=[name for name, _ in schemas()])
def test_the_root_metadata_says_nothing_but_its_type(name: str, schema: dict) -> None:
    """The API server rejects a CRD whose root metadata schema has more than `type` (even a description)."""
    assert schema["properties"].get("metadata", {"type": "object"}) == {"type": "object"}, name
