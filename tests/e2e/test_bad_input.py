"""Bad input is refused where it can be known, and stalls (never crashes) where it cannot.

1. Invalid manifests are refused by ``kubectl apply`` itself (server-side: the
   OpenAPI schema, CEL ``x-kubernetes-validations``, strict field validation),
   with a message that names the offending field. Nothing is created.
2. Immutable fields cannot be changed, removed or added once an instance exists
   (status.instanceId; before it they can be corrected); the mutable ones can. Only the API server is involved: no operator runs, so the
   objects get no finalizers.
3. Values the schema cannot judge (an AMI, key pair, subnet or security group
   that does not exist) end Stalled/InvalidParameter naming the value, and no
   instance exists.
4. None of this crashes the operator.
"""

from __future__ import annotations

import copy
import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import REGION, Kube, instances_of, worker_manifest

pytestmark = pytest.mark.e2e

API_VERSION = "cml.dev/v1alpha1"
#: Well-formed ids for manifests that never reach EC2 (the API server refuses them first).
VALID_SPEC: dict[str, Any] = {
    "region": REGION,
    "amiId": "ami-0123456789abcdef0",
    "subnetId": "subnet-0123456789abcdef0",
    "securityGroupIds": ["sg-0123456789abcdef0"],
    "instanceType": "m5.large",
}
#: The API server appends this when schema errors stop it from running the CEL rules.
CEL_SKIPPED = "some validation rules were not checked because the object was invalid"


# ====================================================================== 1. refused by kubectl apply


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """An edit setting spec field ``path`` (dotted) to ``value``."""
    def edit(spec: dict) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            spec = spec.setdefault(key, {})
        spec[leaf] = value
    return edit


def _drop(*fields: str) -> Callable[[dict], None]:
    def edit(spec: dict) -> None:
        for field in fields:
            spec.pop(field)
    return edit


def _then(*edits: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(spec: dict) -> None:
        for one in edits:
            one(spec)
    return edit


def _no_spec(manifest: dict) -> None:
    del manifest["spec"]


def _case(case_id: str, edit: Callable[[dict], None], field: str, says: str, marks=()) -> Any:
    """One invalid manifest: VALID_SPEC with ``edit``; the error must name ``field`` and say ``says``."""
    return pytest.param(edit, field, says, id=case_id, marks=marks)


PATTERN = "in body should match"
TOO_LONG = "Too long: may not be more than"


def _wording(stderr: str) -> str:
    """The API server's messages as 1.34 words them (1.31 said "may not be longer than"; make test-k8s)."""
    return stderr.replace("Too long: may not be longer than", TOO_LONG)
UNSUPPORTED = "Unsupported value"
REQUIRED = "Required value"
UNKNOWN = "strict decoding error: unknown field"

REJECTED = [
    # ---- patterns and lengths of ids
    _case("region-uppercase", _set("region", "US-EAST-1"), "spec.region", PATTERN),
    _case("region-without-number", _set("region", "us-east"), "spec.region", PATTERN),
    _case("region-too-long", _set("region", "us-" + "a" * 30 + "-1"), "spec.region", TOO_LONG),
    _case("amiId-too-short", _set("amiId", "ami-123"), "spec.amiId", PATTERN),
    _case("amiId-uppercase-hex", _set("amiId", "ami-0123456789ABCDEF0"), "spec.amiId", PATTERN),
    _case("subnetId-pattern", _set("subnetId", "subnet-xyz"), "spec.subnetId", PATTERN),
    _case("securityGroupIds-item-pattern", _set("securityGroupIds", ["sg-0123456789abcdef0", "sg-nothex!"]),
          "spec.securityGroupIds[1]", PATTERN),
    _case("instanceId-pattern", _set("instanceId", "i-nothex"), "spec.instanceId", PATTERN),
    _case("instanceType-with-space", _set("instanceType", "m5 large"), "spec.instanceType", PATTERN),
    _case("instanceType-too-long", _set("instanceType", "m5." + "x" * 40), "spec.instanceType", TOO_LONG),
    # ---- exactly one of amiId and amiName (CEL on spec, fieldPath .amiId)
    _case("amiId-and-amiName", _set("amiName", "cml-*"), "spec.amiId",
          "exactly one of spec.amiId and spec.amiName must be set"),
    _case("neither-amiId-nor-amiName", _drop("amiId"), "spec.amiId",
          "exactly one of spec.amiId and spec.amiName must be set"),
    _case("amiName-empty", _then(_drop("amiId"), _set("amiName", "")), "spec.amiName", "at least 1 chars long"),
    _case("amiName-too-long", _then(_drop("amiId"), _set("amiName", "n" * 129)), "spec.amiName", TOO_LONG),
    # ---- tags
    _case("41-tags", _set("tags", {f"k{i}": "v" for i in range(41)}), "spec.tags", "must have at most 40 items"),
    _case("tag-key-aws-prefix", _set("tags", {"aws:cloudformation:stack-name": "x"}), "spec.tags",
          "spec.tags keys must not start with 'aws:'"),
    _case("tag-key-AWS-prefix-uppercase", _set("tags", {"AWS:thing": "x"}), "spec.tags",
          "spec.tags keys must not start with 'aws:'"),
    _case("tag-key-cml.dev-prefix", _set("tags", {"cml.dev/worker-uid": "x"}), "spec.tags",
          "spec.tags keys must not start with 'cml.dev/'"),
    _case("tag-key-129-chars", _set("tags", {"k" * 129: "x"}), "spec.tags", "spec.tags keys must be 1 to 128"),
    _case("tag-key-empty", _set("tags", {"": "x"}), "spec.tags", "spec.tags keys must be 1 to 128"),
    _case("tag-value-257-chars", _set("tags", {"owner": "v" * 257}), "spec.tags.owner", TOO_LONG + " 256"),
    _case("tag-value-integer", _set("tags", {"count": 3}), "spec.tags.count", "must be of type string"),
    _case("tags-as-list", _set("tags", ["owner=me"]), "spec.tags", "must be of type object"),
    # ---- userData
    _case("userData-16385-chars", _set("userData", "x" * 16385), "spec.userData", TOO_LONG + " 16384"),
    _case("userData-16386-bytes-in-8193-chars", _set("userData", "\u00e9" * 8193), "spec.userData", "16384"),
    # ---- enums
    _case("desiredState-unknown", _set("desiredState", "Paused"), "spec.desiredState",
          f'{UNSUPPORTED}: "Paused": supported values: "Running", "Stopped"'),
    _case("desiredState-lowercase", _set("desiredState", "running"), "spec.desiredState", UNSUPPORTED),
    _case("deletionPolicy-unknown", _set("deletionPolicy", "Orphan"), "spec.deletionPolicy",
          f'{UNSUPPORTED}: "Orphan": supported values: "Delete", "Retain"'),
    _case("rootVolume.type-unknown", _set("rootVolume", {"sizeGiB": 100, "type": "st1"}), "spec.rootVolume.type",
          f'{UNSUPPORTED}: "st1"'),
    # ---- rootVolume size
    _case("rootVolume.sizeGiB-7", _set("rootVolume", {"sizeGiB": 7}), "spec.rootVolume.sizeGiB",
          "should be greater than or equal to 8"),
    _case("rootVolume.sizeGiB-16385", _set("rootVolume", {"sizeGiB": 16385}), "spec.rootVolume.sizeGiB",
          "should be less than or equal to 16384"),
    _case("rootVolume.sizeGiB-missing", _set("rootVolume", {"type": "gp3"}), "spec.rootVolume.sizeGiB", REQUIRED),
    # ---- empty optional strings
    _case("keyName-empty", _set("keyName", ""), "spec.keyName", "at least 1 chars long"),
    _case("iamInstanceProfile-empty", _set("iamInstanceProfile", ""), "spec.iamInstanceProfile",
          "at least 1 chars long"),
    # ---- wrong types
    _case("rootVolume.sizeGiB-string", _set("rootVolume", {"sizeGiB": "100"}), "spec.rootVolume.sizeGiB",
          "must be of type integer"),
    _case("rootVolume.sizeGiB-fraction", _set("rootVolume", {"sizeGiB": 100.5}), "spec.rootVolume.sizeGiB",
          "must be of type integer"),
    _case("detailedMonitoring-string", _set("detailedMonitoring", "yes"), "spec.detailedMonitoring",
          "must be of type boolean"),
    _case("securityGroupIds-string", _set("securityGroupIds", "sg-0123456789abcdef0"), "spec.securityGroupIds",
          "must be of type array"),
    # ---- lists
    _case("6-security-groups", _set("securityGroupIds", [f"sg-0123456789abcdef{i}" for i in range(6)]),
          "spec.securityGroupIds", "must have at most 5 items"),
    _case("security-group-twice", _set("securityGroupIds", ["sg-0123456789abcdef0", "sg-0123456789abcdef0"]),
          "spec.securityGroupIds[1]", 'Duplicate value: "sg-0123456789abcdef0"'),
    # ---- required
    _case("region-missing", _drop("region"), "spec.region", REQUIRED),
    _case("subnetId-missing", _drop("subnetId"), "spec.subnetId",
          "spec.subnetId is required unless spec.instanceId names an instance to adopt"),
    _case("spec-missing", _no_spec, "spec", REQUIRED),
    # ---- unknown fields: kubectl apply defaults to --validate=strict, so the server refuses them
    _case("unknown-spec.foo", _set("foo", "bar"), "spec.foo", UNKNOWN),
    _case("unknown-spec.rootVolume.iops", _set("rootVolume", {"sizeGiB": 100, "type": "io2", "iops": 3000}),
          "spec.rootVolume.iops", UNKNOWN),
]


def invalid_manifest(name: str, edit: Callable[[dict], None]) -> dict:
    manifest = {"apiVersion": API_VERSION, "kind": "CMLWorker", "metadata": {"name": name},
                "spec": copy.deepcopy(VALID_SPEC)}
    if edit is _no_spec:
        edit(manifest)
    else:
        edit(manifest["spec"])
    return manifest


@pytest.fixture(scope="module")
def shared_kube(control_plane, api_client) -> Iterator[Kube]:
    """One namespace for the whole rejection matrix (nothing is meant to be created in it)."""
    name = f"t-bad-input-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield Kube(control_plane, name, api_client)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


#: Cases in the matrix. Pinned so that a case cannot vanish unnoticed (a ">= 32" bound let 13 of
#: 45 go): adding a case means raising this number in the same change.
REJECTED_CASES = 45


def test_the_rejection_matrix_keeps_every_case():
    assert len(REJECTED) == REJECTED_CASES, "a case was added or removed: update REJECTED_CASES with it"
    assert len({case.id for case in REJECTED}) == len(REJECTED)


@pytest.mark.parametrize(("edit", "field", "says"), REJECTED)
def test_kubectl_apply_refuses_an_invalid_manifest_naming_the_field(shared_kube, request, edit, field, says):
    name = "bad-" + request.node.callspec.id.lower().replace(".", "-")
    result = shared_kube.apply(invalid_manifest(name, edit), check=False)

    created = shared_kube.exists(name)
    if created:  # keep the namespace clean for the other cases; no operator, so no finalizer
        shared_kube.run("delete", "cmlworker", name, "--wait=false", check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert not created
    if says == UNKNOWN:
        # Strict decoding fails before validation: a BadRequest that names the field but not the object.
        assert f'{says} "{field}"' in result.stderr, result.stderr
        assert 'CMLWorker in version "v1alpha1" cannot be handled as a CMLWorker' in result.stderr
    else:
        # Schema and CEL errors: 'The CMLWorker "<name>" is invalid: ... <field>: <what>'.
        assert f'The CMLWorker "{name}" is invalid' in result.stderr, result.stderr
        assert f"{field}: " in result.stderr, result.stderr
        assert says in _wording(result.stderr), result.stderr


def test_unknown_fields_are_only_refused_under_strict_validation(shared_kube):
    """Strict is kubectl's default; with --validate=warn (the API's own default for other clients) the
    unknown field is accepted with a warning and pruned, so it never reaches the operator."""
    manifest = invalid_manifest("unknown-field-warn", _set("foo", "bar"))

    result = shared_kube.run("apply", "--validate=warn", "-f", "-", input=json.dumps(manifest))

    assert 'unknown field "spec.foo"' in result.stderr
    stored = shared_kube.get("unknown-field-warn")["spec"]
    assert "foo" not in stored and stored["amiId"] == VALID_SPEC["amiId"]
    shared_kube.run("delete", "cmlworker", "unknown-field-warn")


# ====================================================================== 2. immutable and mutable fields


def _full_worker(name: str, network: dict[str, str], **overrides: Any) -> dict:
    """A valid worker with every immutable field set (only the API server sees it: no operator runs)."""
    spec: dict[str, Any] = {"keyName": "cml-key", "iamInstanceProfile": "cml-worker",
                            "rootVolume": {"sizeGiB": 100, "type": "gp3"},
                            "userData": "#cloud-config\npackages: [jq]\n", "instanceId": "i-0123456789abcdef0",
                            "tags": {"team": "net"}}
    spec.update(overrides)
    return worker_manifest(name, network, **spec)


def _ami_name(network: dict[str, str]) -> str:
    return network["ami_name"]


def _ami_id(network: dict[str, str]) -> str:
    return network["ami"]


def _resolve(values: dict[str, Any], network: dict[str, str]) -> dict[str, Any]:
    return {key: value(network) if callable(value) else value for key, value in values.items()}


AMI_BY_NAME = {"amiId": None, "amiName": _ami_name}

# (id, base overrides, edit (None removes the field), the field and message the API server names)
IMMUTABLE = [
    ("region-changed", {}, {"region": "us-west-2"}, "spec.region", "spec.region is immutable"),
    ("amiId-changed", {}, {"amiId": "ami-0123456789abcdef0"}, "spec.amiId", "spec.amiId is immutable"),
    ("amiId-swapped-for-amiName", {}, {"amiId": None, "amiName": "cml-*"}, "spec.amiId", "spec.amiId is immutable"),
    ("amiName-changed", AMI_BY_NAME, {"amiName": "cml-2.8-*"}, "spec.amiName", "spec.amiName is immutable"),
    # Both rules break; the admission policy names the first (amiId), which says enough.
    ("amiName-swapped-for-amiId", AMI_BY_NAME, {"amiName": None, "amiId": _ami_id}, "spec.amiName",
     "spec.amiId is immutable"),
    ("subnetId-changed", {}, {"subnetId": "subnet-0123456789abcdef0"}, "spec.subnetId", "spec.subnetId is immutable"),
    ("keyName-changed", {}, {"keyName": "other-key"}, "spec.keyName", "spec.keyName is immutable"),
    ("keyName-removed", {}, {"keyName": None}, "spec.keyName", "spec.keyName is immutable"),
    ("keyName-added", {"keyName": None}, {"keyName": "cml-key"}, "spec.keyName", "spec.keyName is immutable"),
    ("iamInstanceProfile-changed", {}, {"iamInstanceProfile": "arn:aws:iam::123456789012:instance-profile/other"},
     "spec.iamInstanceProfile", "spec.iamInstanceProfile is immutable"),
    ("iamInstanceProfile-removed", {}, {"iamInstanceProfile": None}, "spec.iamInstanceProfile",
     "spec.iamInstanceProfile is immutable"),
    ("rootVolume.sizeGiB-changed", {}, {"rootVolume": {"sizeGiB": 200, "type": "gp3"}}, "spec.rootVolume",
     "spec.rootVolume is immutable"),
    ("rootVolume.type-changed", {}, {"rootVolume": {"sizeGiB": 100, "type": "io2"}}, "spec.rootVolume",
     "spec.rootVolume is immutable"),
    ("rootVolume-removed", {}, {"rootVolume": None}, "spec.rootVolume", "spec.rootVolume is immutable"),
    ("userData-changed", {}, {"userData": "#cloud-config\npackages: [jq, curl]\n"}, "spec.userData",
     "spec.userData is immutable"),
    ("userData-removed", {}, {"userData": None}, "spec.userData", "spec.userData is immutable"),
    ("instanceId-changed", {}, {"instanceId": "i-0fedcba9876543210"}, "spec.instanceId",
     "spec.instanceId is immutable once set"),
    ("instanceId-removed", {}, {"instanceId": None}, "spec.instanceId", "spec.instanceId is immutable once set"),
]


@pytest.mark.parametrize(("base", "edit", "field", "says"),
                         [pytest.param(b, e, f, s, id=i) for i, b, e, f, s in IMMUTABLE])
def test_an_immutable_field_cannot_be_changed_removed_or_added(kube, network, base, edit, field, says):
    base = _resolve(base, network)
    kube.apply(_full_worker("frozen", network, **base))
    _launched(kube, "frozen")  # immutability starts with an instance (issue 10: fix typos before it)
    before = kube.get("frozen")

    result = kube.apply(_full_worker("frozen", network, **{**base, **_resolve(edit, network)}), check=False)

    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert '"frozen" is invalid' in result.stderr, result.stderr
    assert says in _wording(result.stderr), result.stderr
    after = kube.get("frozen")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == 1


def _launched(kube: Kube, name: str, instance_id: str = "i-0aaaaaaaaaaaaaaa1") -> None:
    """What the operator writes once it has an instance (no operator runs in these tests)."""
    kube.run("patch", "cmlworker", name, "--subresource=status", "--type=merge",
             "-p", json.dumps({"status": {"instanceId": instance_id}}))


@pytest.mark.parametrize(("base", "edit", "field", "says"),
                         [pytest.param(b, e, f, s, id=i) for i, b, e, f, s in IMMUTABLE
                          if not f.endswith("instanceId")])
def test_an_immutable_field_can_be_corrected_while_nothing_was_launched(kube, network, base, edit, field, says):
    base = _resolve(base, network)
    kube.apply(_full_worker("fixable", network, **base))

    result = kube.apply(_full_worker("fixable", network, **{**base, **_resolve(edit, network)}))

    assert "configured" in result.stdout
    assert kube.get("fixable")["metadata"]["generation"] == 2


def test_instance_id_cannot_be_added_once_an_instance_was_launched(kube, network):
    kube.apply(_full_worker("launched", network, instanceId=None))
    _launched(kube, "launched")
    result = kube.apply(_full_worker("launched", network, instanceId="i-0123456789abcdef0"), check=False)
    assert result.returncode != 0
    assert "spec.instanceId cannot be added to a worker that already launched an instance" in result.stderr


# (id, edit (None removes the field)); every immutable field stays as it was, so their rules must not misfire
MUTABLE = [
    ("instanceType", {"instanceType": "m5.xlarge"}),
    ("desiredState", {"desiredState": "Stopped"}),
    ("tags-changed", {"tags": {"team": "ops", "cost-center": "42"}}),
    ("tags-removed", {"tags": None}),
    ("securityGroupIds-changed", {"securityGroupIds": ["sg-0123456789abcdef0", "sg-0fedcba9876543210"]}),
    ("securityGroupIds-removed", {"securityGroupIds": None}),
    ("detailedMonitoring", {"detailedMonitoring": False}),
    ("deletionPolicy", {"deletionPolicy": "Retain"}),
    ("all-at-once", {"instanceType": "c5.metal", "desiredState": "Stopped", "tags": {"a": "b"},
                     "securityGroupIds": ["sg-0fedcba9876543210"], "detailedMonitoring": False,
                     "deletionPolicy": "Retain"}),
]


@pytest.mark.parametrize("edit", [pytest.param(e, id=i) for i, e in MUTABLE])
def test_a_mutable_field_can_be_changed(kube, network, edit):
    kube.apply(_full_worker("supple", network))
    before = kube.get("supple")["spec"]

    result = kube.apply(_full_worker("supple", network, **edit))

    assert "configured" in result.stdout
    after = kube.get("supple")
    assert after["metadata"]["generation"] == 2
    for key, value in edit.items():
        assert after["spec"].get(key) == value
    unchanged = {k: v for k, v in before.items() if k not in edit}
    assert {k: after["spec"].get(k) for k in unchanged} == unchanged


def test_an_adopted_instance_id_may_be_set_later_but_not_changed(kube, network):
    """``instanceId`` is immutable *once set*: adding it to a worker without one is allowed."""
    kube.apply(_full_worker("adopt-later", network, instanceId=None))

    kube.apply(_full_worker("adopt-later", network, instanceId="i-0123456789abcdef0"))
    assert kube.get("adopt-later")["spec"]["instanceId"] == "i-0123456789abcdef0"

    result = kube.apply(_full_worker("adopt-later", network, instanceId="i-0fedcba9876543210"), check=False)
    assert result.returncode != 0 and "spec.instanceId is immutable once set" in result.stderr


# ====================================================================== 3. valid schema, wrong values: Stalled


MISSING_AMI = "ami-0123456789abcdef0"
MISSING_SUBNET = "subnet-0123456789abcdef0"
MISSING_GROUP = "sg-0123456789abcdef0"

# (id, spec overrides, what the Stalled message must contain: the failing call, EC2's code and the bad
#  value, whether RunInstances is called). The value is quoted as moto words it, e.g. '[ami-...]'.
STALLS = [
    # The operator checks the image and the key pair itself, before RunInstances.
    ("ami-id-not-found", {"amiId": MISSING_AMI}, ["DescribeImages", "InvalidAMIID.NotFound", MISSING_AMI], False),
    ("ami-name-matches-nothing", {"amiId": None, "amiName": "no-such-cml-image-*"},
     ["DescribeImages", "InvalidAMIName.NotFound", "amiName 'no-such-cml-image-*'"], False),
    ("key-pair-not-found", {"keyName": "no-such-key"},
     ["DescribeKeyPairs", "InvalidKeyPair.NotFound", "no-such-key"], False),
    # EC2 (moto) refuses these in RunInstances itself; the call fails and creates nothing.
    ("subnet-not-found", {"subnetId": MISSING_SUBNET},
     ["RunInstances", "InvalidSubnetID.NotFound", MISSING_SUBNET], True),
    ("security-group-not-found", {"securityGroupIds": [MISSING_GROUP]},
     ["RunInstances", "InvalidGroup.NotFound", MISSING_GROUP], True),
]


def assert_healthy(operator) -> None:
    assert operator.running, f"the operator exited:\n{operator.logs()[-3000:]}"
    assert "Traceback" not in operator.logs()
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5) as response:
        assert response.status == 200


@pytest.mark.parametrize(("spec", "words", "runs"), [pytest.param(s, w, r, id=i) for i, s, w, r in STALLS])
def test_a_value_ec2_does_not_know_stalls_invalid_parameter_and_creates_nothing(kube, network, aws, proxy,
                                                                                operator, spec, words, runs):
    kube.apply(worker_manifest("wrong", network, **spec))

    stalled = kube.wait_condition("wrong", "Stalled", reason="InvalidParameter")
    for word in words:
        assert word in stalled["message"], stalled
    assert kube.condition("wrong", "Ready")["status"] == "False"
    assert kube.get("wrong")["status"]["phase"] == "Failed"
    kube.wait_event("wrong", "InvalidParameter", type_="Warning")  # Kopf may post it after the status
    assert instances_of(aws, kube.get("wrong")["metadata"]["uid"], include_gone=True) == []
    if runs:
        assert proxy.count("RunInstances") >= 1
        assert proxy.count("RunInstances", "200") == 0
    else:
        assert proxy.count("RunInstances") == 0
    assert_healthy(operator)


# ====================================================================== 4. the operator survives it all


def test_the_operator_survives_every_wrong_value_at_once_and_still_works(kube, network, aws, proxy, operator):
    for index, (_, spec, _, _) in enumerate(STALLS):
        kube.apply(worker_manifest(f"wrong-{index}", network, **spec))
    kube.apply(worker_manifest("fine", network))

    for index in range(len(STALLS)):
        kube.wait_condition(f"wrong-{index}", "Stalled", reason="InvalidParameter")
    kube.wait_condition("fine", "Ready")
    assert_healthy(operator)
    assert proxy.count("RunInstances", "200") == 1  # only "fine"

    # The missing key pair appears; any spec change is a new attempt, and it succeeds.
    key_case = next(i for i, case in enumerate(STALLS) if case[0] == "key-pair-not-found")
    aws.create_key_pair(KeyName="no-such-key")
    kube.patch_spec(f"wrong-{key_case}", {"tags": {"retry": "1"}})
    kube.wait_condition(f"wrong-{key_case}", "Ready")
    assert len(instances_of(aws, kube.get(f"wrong-{key_case}")["metadata"]["uid"])) == 1
    assert_healthy(operator)
