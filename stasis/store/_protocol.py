"""
The interface every cache store offers: the engine, the management commands,
the admin API and the pytest plugin use nothing else, so a second engine
(PostgreSQL) is one more implementation, not a change to its callers.

It is deliberately narrow: the in-memory speed-ups (hot entries, the key
filter, batching of hit counts) belong to the cache engine, which keeps them
right through the store's change feed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Protocol

from twisted.internet.defer import Deferred

from stasis.model import Entry, EntryFilter, Page, Saving, StoreStats
from stasis.store._feed import ChangeFeed

__all__ = ["EVERY_ENTRY", "SAVING_COLUMNS", "BadCursor", "SavingColumn", "Store", "StoreError"]

#: The filter that matches every entry.
EVERY_ENTRY = EntryFilter()

#: What :meth:`Store.tokens_saved_by` sums by.
SavingColumn = Literal["model", "namespace"]
SAVING_COLUMNS: tuple[SavingColumn, ...] = ("model", "namespace")


class StoreError(Exception):
    """The cache database cannot be opened or used; the message says why."""


class BadCursor(StoreError):
    """
    A listing cursor that no listing made: the caller's mistake (a ``400``
    from the admin API), not the database's.
    """


class Store(Protocol):
    """
    What stasis needs from a cache database.

    Every method returning a Deferred fires once its work is committed (or
    read), or fails with :class:`StoreError` when the database refuses it;
    writes are applied in the order they were asked for, so a delete asked
    for after a put is never undone by that put. Each committed change is
    published on :attr:`changes`, this process's at once, other processes'
    within about a second.
    """

    @property
    def secret(self) -> bytes:
        """
        The HMAC secret for credential fingerprints; fixed for the database's
        life (read for every key: a database file replaced under the store
        brings its own).
        """

    @property
    def writable(self) -> bool:
        """Whether a miss should be stored; False while the database refuses writes."""

    @property
    def held_up(self) -> bool:
        """
        True while writes wait for a lock another process holds: they are
        committed once it is let go, so a commit asked for now is not worth
        holding an answer back for.
        """

    @property
    def location(self) -> str:
        """Where the database is, for log lines and errors: never a password."""

    @property
    def shared(self) -> bool:
        """
        Whether other daemons may store into this database at any moment (a
        database server; a file several workers share). Then nothing kept in
        memory may conclude that a key is absent: only the database can say.
        """

    @property
    def changes(self) -> ChangeFeed:
        """
        Committed puts, deletes and purges, naming their keys, in commit order.

        This process's (``local=True``) are published right after their commit
        and before the Deferred of the write fires; puts committed together may
        come as one change. Other processes' (``local=False``) come within
        about a second, a delete however it was made (an ``rm``, a purge, raw
        SQL); a :attr:`~stasis.model.ChangeKind.RESET` says the store lost
        track and everything must be forgotten. Counting hits publishes nothing.
        """

    def open(self) -> None:
        """Connect, create or migrate the schema; :class:`StoreError` if it cannot be used."""

    async def close(self) -> None:
        """
        Wait for the writes asked for so far, then disconnect; a lock another
        process holds is not waited out then: the writes waiting for it fail.
        """

    def get(self, key: str, *, request: bool = False) -> Deferred[Entry | None]:
        """``key``'s entry; with its :class:`~stasis.model.StoredRequest` if ``request``."""

    def get_many(self, keys: Sequence[str]) -> Deferred[list[Entry]]:
        """The entries of ``keys`` that exist, with their requests, in the order of ``keys``."""

    def match_keys(self, prefix: str, limit: int = 2) -> Deferred[tuple[str, ...]]:
        """
        Up to ``limit`` stored keys starting with the hex ``prefix``, in order;
        none for a prefix that is not hex. Counts the writes asked for before it, as
        :meth:`stats` does.
        """

    def put(self, entry: Entry) -> Deferred[None]:
        """
        Store ``entry``, replacing any entry of its key; fires once committed.

        Puts asked for while a commit is under way may be committed together.
        """

    def put_all(self, entries: Sequence[Entry]) -> Deferred[int]:
        """
        Store all of ``entries`` in one transaction (an import), replacing
        entries of the same keys; or, if any is refused, none of them.
        """

    def delete(self, key: str) -> Deferred[bool]:
        """Remove ``key``'s entry; fires with whether there was one."""

    def list_entries(
        self, where: EntryFilter = EVERY_ENTRY, limit: int = 100, cursor: str | None = None
    ) -> Deferred[Page]:
        """
        Entries matching ``where``, newest first, at most ``limit`` of them.

        Ordered by ``(created_at, key)``, descending. ``cursor`` comes from the
        previous page (a string that is not one fails with :class:`StoreError`);
        the last page has none. A text filter (:attr:`EntryFilter.text
        <stasis.model.EntryFilter.text>`) finds every entry, even those stored
        before the store kept their search text: it waits until they have it.
        Paging by cursor, not by offset, stays as fast
        at the 100,000th entry as at the first, and an entry stored or removed
        meanwhile neither repeats nor skips one. Counts the writes asked for
        before it, as :meth:`stats` does.
        """

    def purge(self, where: EntryFilter) -> Deferred[int]:
        """
        Remove every entry matching ``where``; fires with how many. With a
        text filter, exactly the entries a listing by it shows.
        """

    def tokens_saved_by(self, column: SavingColumn, limit: int = 20) -> Deferred[list[Saving]]:
        """
        The tokens the hits saved (each entry's total tokens times its hits),
        summed by model or by namespace: the ``limit`` largest sums, largest
        first (ties: more entries first, then by value, entries of no model last).
        """

    def prune(self, now: float) -> Deferred[int]:
        """
        Remove the entries expired at ``now`` (``expires_at <= now``); fires with how many.

        Like :meth:`evict`, in small transactions, each published as a PURGE
        of its keys, and cancellable between them.
        """

    def evict(self, max_bytes: int | None, max_entries: int | None) -> Deferred[int]:
        """
        Remove the least recently used entries (by their last hit, else their
        creation) until the entries' stored size (:attr:`StoreStats.stored_bytes
        <stasis.model.StoreStats.stored_bytes>`) is at most ``max_bytes`` and
        their number at most ``max_entries`` (``None``: no bound); fires with
        how many it removed, 0 when both bounds already hold.

        It works in small transactions (a few hundred entries each), each
        queued behind the writes asked for meanwhile, so that a put never
        waits long behind a large eviction; each is published as a PURGE
        naming its keys when it commits. Cancelling the Deferred stops it
        after the transaction under way (which :meth:`close` waits for).
        """

    def stats(self) -> Deferred[StoreStats]:
        """
        Counted after every write asked for so far, unless they are held up
        (see :attr:`held_up`, or taking longer than a moment): then what is
        committed, at once, so that ``/health`` never waits behind a lock.
        """

    def claim(self, key: str, holder: str, seconds: float) -> Deferred[bool]:
        """
        Take, or renew, ``holder``'s claim to fetch ``key``'s answer for the
        next ``seconds``: True if ``holder`` now holds it, False while another
        holder's claim on it is live.

        How the processes sharing a database make one upstream call for
        identical concurrent misses: the one holding the claim fetches, the
        others wait for its entry. A claim whose holder died (and so stopped
        renewing it) lapses after ``seconds``. A write, in order with the
        others: a claim taken after a put of ``key`` is asked for is taken
        after it is committed. The put of ``key``'s entry by the process
        holding the claim gives the claim up with it, in the same transaction.
        """

    def release(self, key: str, holder: str) -> Deferred[None]:
        """Give up ``holder``'s claim on ``key``, if it holds one; another holder's is left."""

    def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> Deferred[None]:
        """
        Add hits to entries, ``{key: (count, time of the last)}``, in one write.

        A key with no entry is ignored; a read-only database drops them.
        """

    def scan_keys(self, visit: Callable[[bytes], None]) -> Deferred[None]:
        """
        Call ``visit`` with every stored key (its 32 raw bytes), off the reactor
        thread where the store has threads (so ``visit`` must be safe to call
        from another thread), letting other threads run now and then: a million
        keys must not hold up requests.
        """
