"""The price table (``--price-table NAMESPACE/NAME``): a ConfigMap of instance type -> USD per hour.

No prices are shipped: AWS prices differ by region, contract and date, so the figures are
the administrator's. The ConfigMap is read with one GET at most every ``refresh`` seconds
(from the pool and worker passes); a failed read keeps the last table and logs once per
failure kind. Keys that are not numbers are ignored with a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ..kubeapi import KubeApi, KubeApiError
from ..reconcile.usage import parse_price_table

logger = logging.getLogger(__name__)


class PriceTable:
    def __init__(self, ref: str, refresh: float = 60.0) -> None:
        namespace, _, name = ref.partition("/")
        if not namespace or not name:
            raise ValueError(f"--price-table {ref!r} must be NAMESPACE/NAME")
        self.namespace, self.name, self.refresh = namespace, name, refresh
        self._prices: dict[str, float] = {}
        self._read_at: float | None = None
        self._last_problem: str | None = None

    def current(self) -> Mapping[str, float]:
        """The prices as last read (empty before the first read)."""
        return self._prices

    async def refresh_if_due(self, kube: KubeApi | None) -> Mapping[str, float]:
        now = time.monotonic()
        if kube is None or (self._read_at is not None and now - self._read_at < self.refresh):
            return self._prices
        self._read_at = now
        try:
            body = await kube.get_configmap(self.namespace, self.name)
        except KubeApiError as error:
            self._note(f"price table ConfigMap {self.namespace}/{self.name} unreadable ({error.status} "
                       f"{error.reason}); keeping {len(self._prices)} price(s)")
            return self._prices
        prices, bad = parse_price_table(body.get("data"))
        if bad:
            self._note(f"price table {self.namespace}/{self.name}: not a price in USD per hour: {', '.join(bad)}")
        self._prices = prices
        return prices

    def _note(self, problem: str) -> None:
        if problem != self._last_problem:
            logger.warning(problem)
        self._last_problem = problem
