"""
The resource tree: stasis's own endpoints, and the proxy for every other path.
"""

from __future__ import annotations

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from stasis.cache import Counters
from stasis.cache.housekeeping import UNBOUNDED, Bounds
from stasis.metrics import Metrics
from stasis.store import Store
from stasis.web.metrics import MetricsResource
from stasis.web.site import OWN_METHODS, is_admin_path
from stasis.web.status import HealthResource, StatsResource

__all__ = ["Root"]


class Root(Resource):
    """
    ``/health``, ``/stats`` and ``/metrics`` (given ``metrics``) are stasis's,
    and so is everything under ``/_stasis`` (``admin``); any other path
    belongs to the upstream.

    ``counters`` are those ``/stats`` reports: under ``--workers``, every
    worker's added up, and ``worker`` is this process's index, which
    ``/health`` names.
    """

    def __init__(
        self,
        proxy: IResource,
        store: Store,
        counters: Counters,
        bounds: Bounds = UNBOUNDED,
        worker: int | None = None,
        metrics: Metrics | None = None,
        admin: IResource | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.proxy = proxy
        #: ``/_stasis``, the web UI and the admin API, whatever the method.
        self.admin = admin
        self.putChild(b"health", HealthResource(store, counters, worker))
        self.putChild(b"stats", StatsResource(store, counters, bounds))
        if metrics is not None:
            self.putChild(b"metrics", MetricsResource(store, metrics))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return self.proxy

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        # /health, /stats and /metrics answer GET and HEAD; a POST there is an API call
        # for the upstream like any other. /_stasis is stasis's for every
        # method (StasisRequest.process sends it here, see is_admin_path).
        if path == b"_stasis" and self.admin is not None and is_admin_path(request.path):
            return self.admin
        if request.method in OWN_METHODS and path in self.children:
            child: IResource = self.children[path]
            return child
        return self.proxy
