"""The operator's connection to the Kubernetes API: Kopf's own login, with a bounded connection pool.

Kopf's built-in session has no limit on connections. With a thousand workers
patching at once it opened about a thousand TLS connections to the API server,
each holding a 128 KiB TLS buffer (124 MiB of the operator's memory at N=1000 in
the benchmark's memory profile). A pool of a few tens of connections carries the
same traffic: requests wait for a free connection instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import aiohttp
import kopf


def connection_info(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod the ServiceAccount token, elsewhere KUBECONFIG / ~/.kube/config (Kopf's own readers)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def session_for(info: kopf.ConnectionInfo, limit: int) -> aiohttp.ClientSession:
    """An aiohttp session with ``info``'s credentials and at most ``limit`` connections."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # basic auth is deprecated in aiohttp; rarely used
        auth = info.as_aiohttp_basic_auth()
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
    )


async def login_with_bounded_pool(limit: int, **kwargs: Any) -> kopf.AiohttpSession | None:
    """Kopf's login with at most ``limit`` connections."""
    info = connection_info(**kwargs)
    if info is None:
        return None
    session = session_for(info, limit)
    return kopf.AiohttpSession(
        server=info.server, default_namespace=info.default_namespace, expiration=info.expiration,
        priority=info.priority, aiohttp_session=session,
    )


#: Read once at start when --cluster-id is not given (RBAC: get namespaces/kube-system).
CLUSTER_ID_NAMESPACE = "kube-system"


class ClusterIdError(RuntimeError):
    """The cluster id could not be read; the message says what to grant or pass instead."""


async def read_cluster_id(settings: kopf.OperatorSettings) -> str:
    """The uid of the ``kube-system`` namespace: created with the cluster, never renamed, unique per cluster.

    It is what ``kubectl get ns kube-system -o jsonpath='{.metadata.uid}'`` prints, so
    an IAM policy can be written for it before the operator runs.
    """
    info = connection_info(settings=settings)
    if info is None or not info.server:
        raise ClusterIdError("no Kubernetes credentials to read the kube-system namespace; pass --cluster-id")
    url = f"{info.server.rstrip('/')}/api/v1/namespaces/{CLUSTER_ID_NAMESPACE}"
    async with session_for(info, 1) as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
            if response.status in (401, 403):
                raise ClusterIdError(
                    f"reading namespace {CLUSTER_ID_NAMESPACE} was refused ({response.status}): grant "
                    f"'get' on namespaces/{CLUSTER_ID_NAMESPACE} (deploy/rbac.yaml) or pass --cluster-id")
            response.raise_for_status()
            body = await response.json()
    uid = (body.get("metadata") or {}).get("uid")
    if not isinstance(uid, str) or not uid:
        raise ClusterIdError(f"namespace {CLUSTER_ID_NAMESPACE} has no uid; pass --cluster-id")
    return uid
