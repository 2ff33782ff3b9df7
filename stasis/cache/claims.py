"""
Single flight across processes: identical concurrent misses through several
daemons (or workers) sharing one database make one upstream call.

Within a process :mod:`stasis.cache.flights` coalesces misses in memory.
Between processes only the database is shared, so the process that leads a
key's flight first takes the store's claim on the key
(:meth:`~stasis.store.Store.claim`). Holding it, it fetches, renewing the
claim while the fetch lasts, and releases it once its entry is committed (or
its fetch failed). A process that finds the claim held waits for the entry:
woken by the change feed when another process's put names the key, and
looking again every :data:`LOOK_SECONDS` whatever the feed says, since a feed
may lag (SQLite's is read once a second). It takes the claim itself, and
fetches, only when the claim was released without an entry or lapsed because
its holder stopped renewing it (it died): so a daemon killed mid-fetch holds
the others up for :data:`CLAIM_SECONDS` at most.

Only stores that other processes write (``Store.shared``) are claimed on: a
daemon alone with its SQLite file has its in-memory flights, and a claim would
cost it a write transaction per miss for nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from stasis.log import logger
from stasis.model import Change, ChangeKind, Entry
from stasis.store import Store

__all__ = ["CLAIM_SECONDS", "LOOK_SECONDS", "RENEW_SECONDS", "Claims"]

log = logger("stasis.cache")

#: How long a claim lasts unless renewed: how long a dead holder holds the others up.
CLAIM_SECONDS = 30.0
#: How often a live holder renews its claims.
RENEW_SECONDS = 10.0
#: How often a waiting process looks for the entry, whatever the change feed says.
LOOK_SECONDS = 0.25


def _holder_name() -> str:
    return secrets.token_hex(8)


@define
class Claims:
    """This process's claims on a shared store, and its waits for other processes' entries."""

    store: Store
    clock: IReactorTime
    #: Who this process is to the other processes: new at every start.
    holder: str = field(factory=_holder_name)
    _renewing: dict[str, LoopingCall] = field(factory=dict, init=False)
    _waiting: dict[str, list[Deferred[None]]] = field(factory=dict, init=False)

    @property
    def active(self) -> bool:
        """Whether misses claim at all: on a store that others write, and that can be written."""
        return self.store.shared and self.store.writable

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._renewing)

    async def take_or_wait(self, key: str, usable: Callable[[Entry], bool]) -> Entry | None:
        """
        None once this process holds ``key``'s claim (it must fetch, then
        :meth:`release`); else the ``usable`` entry another process stored
        while this one waited.

        A store that fails meanwhile ends the wait with None: the fetch goes
        ahead, unclaimed, as it would without a shared store.
        """
        while True:
            try:
                claimed = await self.store.claim(key, self.holder, CLAIM_SECONDS)
                # Looked for after claiming: an entry put and released just
                # before the claim is in the database by now, and is the answer.
                entry = await self.store.get(key)
            except CancelledError:
                raise
            except Exception as e:
                log.debug("cannot claim {key}: {error}; fetching unclaimed", key=key, error=e)
                return None
            if entry is not None and usable(entry):
                if claimed:
                    self.release(key)
                return entry
            if claimed:
                self._renew(key)
                return None
            await self._stored_or_later(key)

    def release(self, key: str) -> None:
        """Stop renewing ``key``'s claim and give it up (after the writes asked for before)."""
        renewing = self._renewing.pop(key, None)
        if renewing is not None and renewing.running:
            renewing.stop()
        self.store.release(key, self.holder).addErrback(
            lambda failure: log.debug(
                "cannot release the claim on {key}: {error}; it lapses",
                key=key,
                error=failure.value,
            )
        )

    def on_change(self, change: Change) -> None:
        """Wake the waits for the keys another process (or this one) stored."""
        if change.kind is ChangeKind.RESET:
            woken = [w for waits in self._waiting.values() for w in waits]
            self._waiting.clear()
        elif change.kind is ChangeKind.PUT:
            woken = [w for key in change.keys for w in self._waiting.pop(key, ())]
        else:
            return
        for waiter in woken:
            if not waiter.called:
                waiter.callback(None)

    def stop(self) -> None:
        """Stop renewing (the daemon is stopping): the claims still held lapse."""
        for renewing in self._renewing.values():
            if renewing.running:
                renewing.stop()
        self._renewing.clear()

    def _renew(self, key: str) -> None:
        if key in self._renewing:
            return

        def renew() -> None:
            self.store.claim(key, self.holder, CLAIM_SECONDS).addErrback(
                lambda failure: log.debug(
                    "cannot renew the claim on {key}: {error}", key=key, error=failure.value
                )
            )

        renewing = self._renewing[key] = LoopingCall(renew)
        renewing.clock = self.clock
        renewing.start(RENEW_SECONDS, now=False)

    def _stored_or_later(self, key: str) -> Deferred[None]:
        """Fires when a put names ``key``, or after :data:`LOOK_SECONDS`; cancellable."""
        waits = self._waiting.setdefault(key, [])

        def forget(waiter: Deferred[None]) -> None:
            if waiter in waits:
                waits.remove(waiter)
            if not waits and self._waiting.get(key) is waits:
                del self._waiting[key]

        waiter: Deferred[None] = Deferred(forget)
        waits.append(waiter)

        def look_anyway() -> None:
            if not waiter.called:
                waiter.callback(None)

        timer = self.clock.callLater(LOOK_SECONDS, look_anyway)

        def settled(result: object) -> object:
            if timer.active():
                timer.cancel()
            forget(waiter)
            return result

        return waiter.addBoth(settled)
