"""
The store's figures for the admin API's ``stats``, read at most so often.

Each read scans every entry three times (the totals, tokens saved by model
and by namespace): about half a second of a thread at 100,000 entries. A page
left open polls every few seconds, and several may be open; read on every
poll, the scans alone would take a tenth of a core from the proxy. So one
read is shared by every poll that asks while it runs, and kept for
:data:`KEEP_FACTOR` times as long as it took: the scans then cost at most
1/:data:`KEEP_FACTOR` of a thread whatever the cache's size, and a small cache
(a read of a millisecond) is still read again within :data:`MIN_KEEP_SECONDS`.
"""

from __future__ import annotations

import time

from attrs import define, field, frozen
from twisted.internet.defer import Deferred

from stasis.model import Saving, StoreStats
from stasis.store import Store

__all__ = ["KEEP_FACTOR", "MIN_KEEP_SECONDS", "Figures", "StoreFigures"]

#: Figures are kept this many times as long as reading them took.
KEEP_FACTOR = 30
#: ... and at least this long (seconds).
MIN_KEEP_SECONDS = 1.0


@frozen
class Figures:
    stats: StoreStats
    by_model: list[Saving]
    by_namespace: list[Saving]


@define
class StoreFigures:
    """The last :class:`Figures` read from ``store``, and the read under way."""

    store: Store
    top: int
    _kept: Figures | None = field(default=None, init=False)
    _kept_until: float = field(default=0.0, init=False)
    _waiting: list[Deferred[Figures]] | None = field(default=None, init=False)

    async def read(self) -> Figures:
        if self._kept is not None and time.monotonic() < self._kept_until:
            return self._kept
        d: Deferred[Figures] = Deferred()
        if self._waiting is not None:
            self._waiting.append(d)  # a read is under way: its figures will do
            return await d
        self._waiting = waiting = [d]
        began = time.monotonic()
        try:
            figures = Figures(
                await self.store.stats(),
                await self.store.tokens_saved_by("model", self.top),
                await self.store.tokens_saved_by("namespace", self.top),
            )
        except BaseException as e:
            self._waiting = None
            for each in waiting:
                each.errback(e)
            return await d
        ended = time.monotonic()
        self._kept = figures
        self._kept_until = ended + max(MIN_KEEP_SECONDS, KEEP_FACTOR * (ended - began))
        self._waiting = None
        for each in waiting:
            each.callback(figures)
        return await d

    def forget(self) -> None:
        """The cache changed through the API: the next read is a fresh one."""
        self._kept = None
