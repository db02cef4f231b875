"""Kopf handlers, grouped by kind and registered from this one place.

- ``lifecycle``: operator-wide start-up (Kopf settings, the shared runtime), login, clean-up.
- ``worker``: CMLWorker reconcile, timer and deletion.
- ``pool``: CMLWorkerPool passes (children created, rolled and deleted) and their deletion.
- ``discovery``: CMLWorkerDiscovery scans (imports, orphans).
- ``account``: CMLAccounts (cluster-scoped): the account list, assumed roles and their status.
"""

from __future__ import annotations

import kopf

from ..ec2.fence import MutationFence
from ..metrics import Metrics
from ..settings import OperatorSettings
from . import account, discovery, lifecycle, pool, worker


def register(registry: kopf.OperatorRegistry, config: OperatorSettings, metrics: Metrics | None = None,
             fence: MutationFence | None = None) -> None:
    """Register every handler on ``registry`` with the intervals from ``config``."""
    lifecycle.register(registry, config, metrics, fence)
    worker.register(registry, config)
    pool.register(registry, config)
    discovery.register(registry, config)
    account.register(registry, config)
