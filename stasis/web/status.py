"""
``/health`` and ``/stats``: read-only JSON with the original tool's field names.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.cache import Counters
from stasis.cache.housekeeping import UNBOUNDED, Bounds
from stasis.errors import StoreUnreadable
from stasis.log import logger
from stasis.model import StoreStats
from stasis.reports import health_json, stats_json
from stasis.store import Store, StoreError
from stasis.web.exchange import Exchange

__all__ = ["HealthResource", "StatsResource", "StoreReport", "stats_report"]

log = logger("stasis.status")


class StoreReport(Resource):
    """
    A GET resource answering with the store's figures, read without blocking
    the reactor: JSON (:meth:`report`) unless :meth:`body` says otherwise.
    """

    isLeaf = True
    content_type = b"application/json"

    def __init__(self, store: Store, counters: Counters) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.store = store
        self.counters = counters

    def report(self, stats: StoreStats) -> dict[str, Any]:
        raise NotImplementedError

    def body(self, stats: StoreStats) -> bytes:
        return json.dumps(self.report(stats)).encode()

    def render_GET(self, request: Request) -> object:
        exchange = Exchange(request)
        d = ensureDeferred(self._answer(exchange))
        d.addErrback(self._failed, exchange)
        return NOT_DONE_YET

    render_HEAD = render_GET

    async def _answer(self, exchange: Exchange) -> None:
        stats = await self.store.stats()
        if not exchange.open:
            return
        body = self.body(stats)
        request = exchange.request
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        exchange.finish()

    def _failed(self, failure: Failure, exchange: Exchange) -> None:
        if failure.check(StoreError):
            # The database's trouble, said by the store: no traceback to add.
            log.warn("cannot read the cache statistics: {error}", error=failure.value)
        else:
            log.failure("reading the cache statistics failed", failure)
        exchange.fail(
            StoreUnreadable(f"cannot read the cache database: {failure.getErrorMessage()}")
        )


class HealthResource(StoreReport):
    """
    ``GET /health``; under ``--workers`` it also names the process that
    answered (``"worker": {"index": i, "pid": p}``), for operators and tests.
    """

    def __init__(self, store: Store, counters: Counters, worker: int | None = None) -> None:
        super().__init__(store, counters)
        self.worker = worker

    def report(self, stats: StoreStats) -> dict[str, Any]:
        report = health_json(stats)
        if self.worker is not None:
            report["worker"] = {"index": self.worker, "pid": os.getpid()}
        return report


class StatsResource(StoreReport):
    def __init__(self, store: Store, counters: Counters, bounds: Bounds = UNBOUNDED) -> None:
        super().__init__(store, counters)
        self.bounds = bounds

    def report(self, stats: StoreStats) -> dict[str, Any]:
        return stats_report(stats, self.counters, self.bounds)


def stats_report(
    stats: StoreStats, counters: Counters, bounds: Bounds = UNBOUNDED
) -> dict[str, Any]:
    """
    ``/stats``'s JSON: the store's figures with the counters since start.

    Also what :meth:`stasis.embedded.EmbeddedProxy.stats` returns, so an
    embedding program reads the same fields without a round trip over HTTP.
    """
    return {
        **stats_json(stats),
        "hits": counters.hits,
        "misses": counters.misses,
        "bypasses": counters.bypasses,
        "replayMisses": counters.replay_misses,
        "stale": counters.stale,
        "tokensSavedSinceStart": counters.tokens_saved,
        "hitRate": counters.hit_rate,
        "maxSizeBytes": bounds.max_bytes,
        "maxEntries": bounds.max_entries,
        "evictions": counters.evictions,
        "expiredRemoved": counters.expired_removed,
        "coalesced": counters.coalesced,
        "storeErrors": counters.store_errors,
    }
