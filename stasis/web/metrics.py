"""
``GET /metrics``: the service's Prometheus metrics in the text format.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from stasis.metrics import Metrics
from stasis.model import StoreStats
from stasis.store import Store
from stasis.web.status import StoreReport

__all__ = ["MetricsResource"]


class MetricsResource(StoreReport):
    """
    The store's figures are read first, as ``/stats`` reads them (off the
    reactor, never blocking the proxy), then the registry is rendered with
    them: one scrape, one consistent set of numbers.
    """

    content_type = CONTENT_TYPE_LATEST.encode("ascii")

    def __init__(self, store: Store, metrics: Metrics) -> None:
        super().__init__(store, metrics.counters)
        self.metrics = metrics

    def body(self, stats: StoreStats) -> bytes:
        return self.metrics.render(stats)
