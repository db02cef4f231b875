"""botocore's bundled data, loaded once per process, and of EC2's model only the operations we call.

botocore gives every session a data loader of its own, and the EC2 model is the largest it
has: about 4,000 shapes with their documentation, 38,000 ordered dicts, some 25 MiB of a
process that needs 17 operations. The operator makes a session per credential refresh and
one per CMLAccount, so each account cost another copy. Here every session shares one
loader, and that loader keeps of EC2's ``service-2`` only ``EC2_OPERATIONS`` and the shapes
they reach, without documentation: the model botocore builds clients from is otherwise the
bundled one (same version, protocol, shapes), so requests and parsing are unchanged.

An operation left out is not callable (botocore: no such attribute), so the set is checked
against the calls in ``ec2/client.py`` and the shipped IAM policy (tests/unit/test_botodata.py).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import boto3
import botocore.loaders
import botocore.session

#: Every EC2 action the operator calls: the EC2 actions of deploy/iam-policy.json.
EC2_OPERATIONS: frozenset[str] = frozenset({
    "CreateTags", "DeleteTags", "DescribeImages", "DescribeInstanceStatus", "DescribeInstanceTypeOfferings",
    "DescribeInstanceTypes", "DescribeInstances", "DescribeKeyPairs", "DescribeTags", "ModifyInstanceAttribute",
    "ModifyInstanceMetadataOptions", "MonitorInstances", "RunInstances", "StartInstances", "StopInstances",
    "TerminateInstances", "UnmonitorInstances",
})

#: The services the operator makes clients for (``endpoints`` keeps only theirs).
SERVICES: frozenset[str] = frozenset({"ec2", "sts"})

_EC2_SERVICE_MODEL = re.compile(r"(^|/)ec2/[0-9-]+/service-2$")


def lean_service_model(model: Mapping[str, Any], operations: Iterable[str]) -> dict[str, Any]:
    """``model`` with only ``operations`` and the shapes they reach, documentation left out.

    The result is built of new dicts and lists, so nothing in it keeps the full model alive.
    """
    kept_operations = {name: model["operations"][name] for name in sorted(operations)
                       if name in model["operations"]}
    shapes: Mapping[str, Any] = model["shapes"]
    reached: set[str] = set()
    pending = [ref["shape"] for op in kept_operations.values()
               for ref in [op.get("input"), op.get("output"), *op.get("errors", [])] if ref]
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        pending.extend(_shape_refs(shapes[name]))
    lean = {key: _copy(value) for key, value in model.items() if key not in ("operations", "shapes", "documentation")}
    lean["operations"] = {name: _copy(op) for name, op in kept_operations.items()}
    lean["shapes"] = {name: _copy(shapes[name]) for name in shapes if name in reached}
    return lean


def lean_endpoints(endpoints: Mapping[str, Any], services: Iterable[str]) -> dict[str, Any]:
    """botocore's ``endpoints`` (every partition's regions and services) with only ``services``' entries.

    Of some 400 services' endpoints, botocore reads only those of the clients it builds (and
    ``ec2/regions.py`` the regions of EC2's).
    """
    wanted = set(services)
    return _copy(endpoints, keep=lambda key, path: not (path == ("partitions", "services") and key not in wanted))


def _shape_refs(shape: Mapping[str, Any]) -> list[str]:
    refs = [member["shape"] for member in shape.get("members", {}).values()]
    refs += [shape[key]["shape"] for key in ("member", "key", "value") if key in shape]
    return refs


def _copy(value: Any, keep: Callable[[str, tuple[str, ...]], bool] | None = None,
          path: tuple[str, ...] = ()) -> Any:
    """A fresh copy of JSON data without ``documentation`` (botocore reads it for docstrings only).

    ``keep(key, path)`` may leave out more: ``path`` is the keys above (list indexes skipped).
    """
    if isinstance(value, Mapping):
        return {key: _copy(item, keep, path + (key,)) for key, item in value.items()
                if key != "documentation" and (keep is None or keep(key, path))}
    if isinstance(value, list):
        return [_copy(item, keep, path) for item in value]
    return value


class _SearchPaths(list[str]):
    """boto3 appends its own data directory to the loader's paths at every new session: once is enough."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


class LeanLoader(botocore.loaders.Loader):
    """botocore's loader; EC2's service model and the endpoints come out lean."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._search_paths = _SearchPaths(self._search_paths)
        self._leaned: set[str] = set()  # names whose cached data is already the lean copy

    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        data, path = super().load_data_with_path(name)
        if name in self._leaned:
            return data, path
        if _EC2_SERVICE_MODEL.search(name) and "operations" in data:
            data = lean_service_model(data, EC2_OPERATIONS)
        elif name == "endpoints" and "partitions" in data:
            data = lean_endpoints(data, SERVICES)
        else:
            return data, path
        self._cache[("load_data_with_path", name)] = (data, path)  # the cache kept the full one
        self._leaned.add(name)
        return data, path


_LOADER_LOCK = threading.Lock()


def shared_loader() -> LeanLoader:
    """The one loader of this process (botocore's loader is read-only once loaded, and thread-safe to share).

    Its search paths are a default session's: botocore's data, ``~/.aws/models`` and ``AWS_DATA_PATH``.
    """
    with _LOADER_LOCK:  # EC2 threads and STS calls may ask at once at start-up: one parse, not two
        return _shared_loader()


@functools.cache
def _shared_loader() -> LeanLoader:
    data_path = botocore.session.get_session().get_config_variable("data_path")
    paths = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)] if data_path else None
    return LeanLoader(extra_search_paths=paths)


def botocore_session() -> botocore.session.Session:
    """A new botocore session (its own credentials and config) on the shared loader."""
    session = botocore.session.get_session()
    session.register_component("data_loader", shared_loader())
    return session


def boto3_session() -> boto3.session.Session:
    """A new boto3 session on the shared loader: what ``boto3.session.Session()`` gives, leaner."""
    return boto3.session.Session(botocore_session=botocore_session())


__all__ = ["EC2_OPERATIONS", "SERVICES", "LeanLoader", "boto3_session", "botocore_session", "lean_endpoints",
           "lean_service_model", "shared_loader"]
