"""Operator-wide Kopf handlers: start-up settings and the shared runtime, login, and clean-up."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..identity import COMPONENT, instance_identity
from ..kube import ClusterIdError, connection_info, login_with_bounded_pool, read_cluster_id
from ..kubeapi import KubeApi
from ..ec2.fence import MutationFence
from ..metrics import Metrics
from ..passes.orphans import orphan_watch
from ..reconcile.ownership import ANNOTATION_INSTANCE_ID, ANNOTATION_REGION
from ..runtime import Runtime, build_runtime
from ..settings import OperatorSettings
from .worker import FINALIZER

logger = logging.getLogger(__name__)


def register(registry: kopf.OperatorRegistry, config: OperatorSettings, metrics: Metrics | None = None,
             fence: MutationFence | None = None) -> None:
    """Register start-up, login and clean-up on ``registry``."""

    @kopf.on.startup(id="configure", registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        # Kopf's bookkeeping lives in status, so it rides on the status patches we make anyway.
        settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
        # userData is immutable and may hold secrets: keep it out of the stored diff base (in status),
        # and a pool template's userData likewise. The instance-id annotation is the operator's own
        # record: left in the diff base, writing it made Kopf rewrite the diff base in one more patch.
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
            field="status.kopf.lastHandledConfiguration",
            ignored_fields=["spec.userData", "spec.template.spec.userData",
                            ("metadata", "annotations", ANNOTATION_INSTANCE_ID),
                            ("metadata", "annotations", ANNOTATION_REGION)])
        settings.posting.level = logging.INFO
        # Events say who sent them: "cml-operator", not Kopf's default "kopf" (kubectl describe's From column).
        settings.posting.reporting_component = COMPONENT
        settings.posting.reporting_instance = instance_identity()
        settings.posting.event_name_prefix = f"{COMPONENT}-"
        settings.watching.server_timeout = 300  # re-list now and then even if the API server stays quiet
        runtime = build_runtime(config, metrics, fence)
        runtime.kube = KubeApi(lambda: connection_info(settings=settings, logger=logger))
        try:
            runtime.cluster_id = config.cluster_id or await read_cluster_id(settings)
        except ClusterIdError as error:
            raise kopf.PermanentError(str(error)) from error  # fatal: without it no instance is safe to touch
        logger.info("cluster id %s (the cml.dev/cluster tag)%s", runtime.cluster_id,
                    "" if config.cluster_id else " from the kube-system namespace")
        memo.runtime = runtime
        runtime.tasks.append(asyncio.create_task(
            orphan_watch(runtime, runtime.own_cluster_id, config.resync_interval), name="orphan-watch"))
        if memo.runtime.cml is not None:  # spec.cml's Secrets are read through the same API access
            memo.runtime.cml.secrets.attach(memo.runtime.kube)

    @kopf.on.login(id="login", registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        return await login_with_bounded_pool(config.api_connections, **kwargs)

    @kopf.on.cleanup(id="close", registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is not None:
            await runtime.close()
