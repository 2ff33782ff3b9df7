"""
Which keys the store certainly does not hold, known without asking it.

A request seen for the first time is a miss, and learning that costs a lookup
on a reader thread: two thread hops, more reactor time than the SQLite query
itself, and a fifth of a millisecond before the upstream call can start. A
Bloom filter over every key in the store answers "certainly not there" for
almost every new key at once, and "maybe" otherwise, when the lookup happens
as before.

The keys are read after the first lookup that finds nothing (a daemon that
only serves hits, or only replays, never pays for it), on the store's thread,
then kept up to date from the change feed: this process's puts at once,
other processes' within a second. Until the keys are read, and again after
the feed lost track (a RESET), every request is looked up.

On a store other processes write all the time (``Store.shared``: a database
server, a file several workers share) a second is too late: the entry another
worker stored a moment ago must be a hit on the very next request. There the
filter is never built, and every request is looked up.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import ensureDeferred

from stasis.cache.memory.bloom import KeyBloom
from stasis.log import logger
from stasis.model import Change, ChangeKind
from stasis.store import Store

__all__ = ["KeyFilter"]

log = logger("stasis.cache")


@define
class KeyFilter:
    store: Store
    _bloom: KeyBloom | None = field(default=None, init=False)
    #: Keys added while the store's keys are being read: added to the new filter after.
    _pending: list[str] | None = field(default=None, init=False)
    #: Bumped by every RESET, so a read started before one is thrown away.
    _generation: int = field(default=0, init=False)

    @property
    def ready(self) -> bool:
        return self._bloom is not None

    def absent(self, key: str) -> bool:
        """True only if the store certainly lacks ``key``."""
        return self._bloom is not None and not self._bloom.might_hold(key)

    def add(self, key: str) -> None:
        """``key`` is (about to be) stored."""
        if self._bloom is not None:
            self._bloom.add(key)
        elif self._pending is not None:
            self._pending.append(key)

    def on_change(self, change: Change) -> None:
        if change.kind is ChangeKind.PUT:
            for key in change.keys:
                self.add(key)
        elif change.kind is ChangeKind.RESET:
            # Puts the feed did not name may be missing: read the keys again
            # on the next miss, and look everything up until then.
            self._bloom = None
            self._pending = None
            self._generation += 1

    def found_nothing(self) -> None:
        """A lookup found nothing: misses are happening, so read the keys once."""
        if self.store.shared or self._bloom is not None or self._pending is not None:
            return
        self._pending = []
        generation = self._generation

        async def read() -> None:
            stats = await self.store.stats()
            bloom = KeyBloom(expected=2 * stats.entries)
            await self.store.scan_keys(bloom.add_digest)
            if generation != self._generation or self._pending is None:
                return
            for key in self._pending:
                bloom.add(key)
            self._bloom, self._pending = bloom, None

        def failed(failure: object) -> None:
            # Until the keys are read every request is looked up, as without
            # the filter; the next lookup that finds nothing tries again.
            if generation == self._generation:
                self._pending = None
            log.debug("cannot read the cache's keys: {error}", error=failure)

        ensureDeferred(read()).addErrback(failed)
