"""
The cache's housekeeping, in the background: expired entries removed once a
minute, and, when the cache is bounded (``--max-size``, ``--max-entries``),
the least recently used removed whenever puts take it over a bound.

Nothing here is on a request's path. The work is the store's (in its
database threads, in small transactions that puts do not wait long behind);
this only decides when. A bound is checked about a second after the first
put since the last check, so a burst of misses costs one eviction, and the
cache can be over its bound by what was stored in that second. Trouble is
logged once a minute, like the store's other trouble, and never reaches a
request; a database that cannot be written is left alone (the store has
said so already).
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from stasis.cache.counters import Counters
from stasis.log import RateLimitedWarning, logger
from stasis.model import Change, ChangeKind
from stasis.store import Store

__all__ = ["CHECK_AFTER_SECONDS", "PRUNE_EVERY_SECONDS", "UNBOUNDED", "Bounds", "Housekeeping"]

log = logger("stasis.cache")

#: How often expired entries are removed (and the bounds checked, puts or not).
PRUNE_EVERY_SECONDS = 60.0
#: How long after a put the bounds are checked; the puts meanwhile are checked together.
CHECK_AFTER_SECONDS = 1.0


@frozen
class Bounds:
    """How large the cache may grow; ``None`` is no bound."""

    max_bytes: int | None = None
    max_entries: int | None = None

    @property
    def bounded(self) -> bool:
        return self.max_bytes is not None or self.max_entries is not None


#: No bound at all: the cache grows as long as the disk lets it.
UNBOUNDED = Bounds()


@define(eq=False)
class Housekeeping:
    """
    Prunes and evicts in ``store`` between :meth:`start` and :meth:`stop`,
    counting what it removed in ``counters``.
    """

    store: Store
    clock: IReactorTime
    counters: Counters
    bounds: Bounds = UNBOUNDED
    #: Seconds an expired entry is kept before it is pruned: ``--stale-if-error``
    #: may still serve it meanwhile.
    keep_expired: float = 0.0
    _running: bool = field(default=False, init=False)
    _prune_due: bool = field(default=False, init=False)
    _check_due: bool = field(default=False, init=False)
    _next_prune: IDelayedCall | None = field(default=None, init=False)
    _next_check: IDelayedCall | None = field(default=None, init=False)
    #: The round under way, and the store call it waits for.
    _round: Deferred[None] | None = field(default=None, init=False)
    _working: Deferred[int] | None = field(default=None, init=False)
    _unsubscribe: Callable[[], None] | None = field(default=None, init=False)
    _warning: RateLimitedWarning = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._warning = RateLimitedWarning(log, self.clock)

    def start(self) -> None:
        """
        Begin: the bounds are checked at once (they may have been lowered
        since the last start), expired entries looked for in a minute. Not at
        once: a daemon started on a database another one uses, say without
        ``--stale-if-error``, to look at it, must not take the others'
        expired answers away the moment it starts.
        """
        if self._running:
            return
        self._running = True
        self._next_prune = self.clock.callLater(PRUNE_EVERY_SECONDS, self._prune_time)
        if self.bounds.bounded:
            self._unsubscribe = self.store.changes.subscribe(self._changed)
            self._check_due = True
            self._begin()

    async def stop(self) -> None:
        """
        Stop, and wait for the round under way: an eviction or a pruning in
        progress is cancelled, so it ends after its current transaction
        (which the store's close waits for).
        """
        self._running = False
        for call in (self._next_prune, self._next_check):
            if call is not None and call.active():
                call.cancel()
        self._next_prune = self._next_check = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._working is not None:
            self._working.cancel()
        if self._round is not None:
            await self._round

    # When

    def _changed(self, change: Change) -> None:
        # On every commit of a put: keep it cheap.
        if change.kind in (ChangeKind.PUT, ChangeKind.RESET) and self._next_check is None:
            self._next_check = self.clock.callLater(CHECK_AFTER_SECONDS, self._check_time)

    def _check_time(self) -> None:
        self._next_check = None
        self._check_due = True
        self._begin()

    def _prune_time(self) -> None:
        self._next_prune = self.clock.callLater(PRUNE_EVERY_SECONDS, self._prune_time)
        self._prune_due = True
        self._check_due = self.bounds.bounded
        self._begin()

    def _begin(self) -> None:
        """Start a round unless one is under way (it will see what is due)."""
        if self._round is not None or not self._running:
            return
        round_ = ensureDeferred(self._rounds())
        round_.addErrback(lambda failure: log.failure("cache housekeeping failed", failure))
        if not round_.called:  # a store that answers at once has finished it already
            self._round = round_

    async def _rounds(self) -> None:
        try:
            while self._running and (self._prune_due or self._check_due):
                if self._prune_due:
                    self._prune_due = False
                    removed = await self._do("prune", self._prune)
                    self.counters.expired_removed += removed
                    if removed:
                        log.info("removed {count} expired entries", count=removed)
                if self._check_due and self._running:
                    self._check_due = False
                    evicted = await self._do("evict from", self._evict)
                    self.counters.evictions += evicted
                    if evicted:
                        log.debug("evicted {count} least recently used entries", count=evicted)
        finally:
            self._round = None

    # What

    def _prune(self) -> Deferred[int]:
        return self.store.prune(self.clock.seconds() - self.keep_expired)

    def _evict(self) -> Deferred[int]:
        return self.store.evict(self.bounds.max_bytes, self.bounds.max_entries)

    async def _do(self, doing: str, work: Callable[[], Deferred[int]]) -> int:
        """``work()``'s count; 0 when the store cannot be written or refuses it (logged)."""
        if not self.store.writable:
            return 0
        self._working = work()
        try:
            return await self._working
        except CancelledError:
            return 0  # stopping
        except Exception as e:
            self.counters.store_errors += 1
            self._warning.warn(
                "cannot {doing} the cache database: {error}; trying again later",
                doing=doing,
                error=e,
            )
            return 0
        finally:
            self._working = None
