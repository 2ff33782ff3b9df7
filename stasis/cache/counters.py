"""
What the engine counts: requests by outcome since it started (``/stats``),
and hits per entry, written to the store in batches.

Counting a hit in the database on every hit would cost a write transaction
per hit; instead hits are added up in memory and written at most a second
after the first unwritten one, so ``tokensSaved`` trails a hit by a second
at most, as DESIGN allows.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from stasis.log import logger
from stasis.store import Store

__all__ = ["HIT_FLUSH_SECONDS", "Counters", "HitLog"]

log = logger("stasis.cache")

#: Hits are written to the store this long after the first unwritten one.
HIT_FLUSH_SECONDS = 1.0


@define
class Counters:
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    #: Of the misses, those replay mode answered with an error.
    replay_misses: int = 0
    #: Of the hits, expired answers served because the upstream failed.
    stale: int = 0
    #: Tokens the hits since start would have cost (the store's figure covers
    #: every hit ever counted, and trails by up to a second).
    tokens_saved: int = 0
    #: Entries removed to keep the cache within its bounds (``--max-size``, ``--max-entries``).
    evictions: int = 0
    #: Expired entries removed (the housekeeping's pruning, once a minute).
    expired_removed: int = 0
    #: Requests answered by another request's upstream call, which they
    #: joined while it was in flight (single flight, here or in another
    #: process sharing the store), instead of calling the upstream themselves.
    coalesced: int = 0
    #: Reads and writes the cache database failed (a lookup taken for a miss,
    #: an answer not stored, hits or housekeeping not written): the store warns
    #: once a minute at most, this counts every one.
    store_errors: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits among the requests that consulted the cache; 0.0 before the first."""
        looked_up = self.hits + self.misses
        return round(self.hits / looked_up, 4) if looked_up else 0.0


@define
class HitLog:
    """Hits per key not yet written to ``store``."""

    store: Store
    clock: IReactorTime
    #: Where a failed write of the hits is counted (``store_errors``).
    counters: Counters | None = None
    _pending: dict[str, tuple[int, float]] = field(factory=dict, init=False)
    _call: IDelayedCall | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    def count(self, key: str, when: float) -> None:
        if self._closed:
            return  # the daemon is stopping, and so is counting
        count, _ = self._pending.get(key, (0, when))
        self._pending[key] = (count + 1, when)
        if self._call is None:
            self._call = self.clock.callLater(HIT_FLUSH_SECONDS, self._flush_later)

    def forget(self, key: str) -> None:
        """``key``'s entry was replaced or removed: its hits are not the new entry's."""
        self._pending.pop(key, None)

    def _flush_later(self) -> None:
        self._call = None
        self.flush().addErrback(self._not_written)

    def _not_written(self, failure: Failure) -> None:
        # The store warns about a database it cannot write (once a minute).
        if self.counters is not None:
            self.counters.store_errors += 1
        log.debug("cannot count hits: {error}", error=failure.value)

    def flush(self) -> Deferred[None]:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        pending, self._pending = self._pending, {}
        if not pending:
            return succeed(None)
        return self.store.add_hits(pending)

    def close(self) -> Deferred[None]:
        self._closed = True
        return self.flush()
