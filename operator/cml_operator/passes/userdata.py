"""User data from a Secret (spec.userDataSecretRef), read at launch and handed to RunInstances only.

The content is never logged, written to status or events, or kept: errors name the
Secret and key, never the value. A Secret or key that does not exist yet is a dependency
GitOps may create in the same sync, so it is rechecked slowly (policy DEPENDENCY_CODES).
"""

from __future__ import annotations

from ..ec2.exceptions import EC2InvalidParameterException, IntegrationException
from ..kubeapi import KubeApiError
from ..reconcile.spec import SecretKeyRef
from ..runtime import Runtime

MAX_USER_DATA = 16 * 1024
SECRET_NOT_FOUND = "UserDataSecret.NotFound"
SECRET_TOO_LARGE = "UserDataSecret.TooLarge"
SECRET_FORBIDDEN = "UserDataSecret.Forbidden"


async def user_data_from_secret(runtime: Runtime, namespace: str, ref: SecretKeyRef) -> str:
    where = f"spec.userDataSecretRef: key {ref.key!r} of Secret {namespace}/{ref.name}"
    if runtime.kube is None:
        raise IntegrationException(f"{where} cannot be read: no Kubernetes API connection yet", code="NoKubeApi")
    try:
        value = await runtime.kube.secret_value(namespace, ref.name, ref.key)
    except KubeApiError as error:
        if error.status == 403:
            raise IntegrationException(
                f"{where} cannot be read: the operator may not get Secrets in {namespace} "
                "(grant get on secrets, see docs/install.md)",
                code=SECRET_FORBIDDEN) from None
        raise IntegrationException(f"{where} cannot be read: {error.status} {error.reason}",
                                   code=f"Kube{error.status}") from None
    if value is None:
        raise EC2InvalidParameterException(f"Invalid {where} does not exist", code=SECRET_NOT_FOUND)
    if len(value) > MAX_USER_DATA:
        raise EC2InvalidParameterException(f"Invalid {where} holds {len(value)} bytes; user data is at most 16 KiB",
                                           code=SECRET_TOO_LARGE)
    return value.decode("utf-8", "surrogateescape")
