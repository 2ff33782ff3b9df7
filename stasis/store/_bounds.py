"""
Removing entries in small transactions: the expired ones (prune), and the
least recently used while the cache is over a bound (evict).

Either can concern a large part of the cache at once (a bound lowered on a
big cache, a day of recordings expiring together), and the store has one
writer: a single transaction removing them all would hold every put behind
it for as long as it takes. Each transaction removes at most :data:`BATCH`
entries, and the next one is queued behind the writes asked for meanwhile,
so a put waits for one batch at most, a few milliseconds.

The functions here are one batch's statements, run inside the store's
write transaction (under the write lock, so what they read is what they
delete); the same on every SQL engine but for ``param``.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from stasis.store._rows import LAST_USED_SQL, SIZE_SQL

__all__ = ["BATCH", "Batch", "evict_batch", "expired_sql", "least_recently_used_sql", "prune_batch"]

#: Entries removed by one transaction at most.
BATCH = 500

#: The entries' count and total stored size, which triggers keep up to date.
_TOTALS = "SELECT entry_count, stored_bytes FROM totals"


def expired_sql(param: str) -> str:
    """The expired entries' keys, up to a limit: read through the ``entries_expires_at`` index."""
    return f"SELECT key FROM entries WHERE expires_at <= {param} LIMIT {param}"


def least_recently_used_sql(param: str) -> str:
    """
    Keys and stored sizes, least recently used first, up to a limit: read in
    the order of the ``entries_last_used`` index, never sorted.
    """
    return f"SELECT key, {SIZE_SQL} FROM entries ORDER BY {LAST_USED_SQL} LIMIT {param}"


@frozen
class Batch:
    """What one transaction removed."""

    keys: tuple[bytes, ...]
    #: Whether another transaction has more to remove.
    more: bool


def prune_batch(cursor: Any, param: str, now: float) -> Batch:
    """Remove up to :data:`BATCH` entries expired at ``now``."""
    cursor.execute(expired_sql(param), (now, BATCH))
    keys = tuple(bytes(key) for (key,) in cursor.fetchall())
    _delete(cursor, param, keys)
    return Batch(keys, more=len(keys) == BATCH)


def evict_batch(cursor: Any, param: str, max_bytes: int | None, max_entries: int | None) -> Batch:
    """
    Remove the least recently used entries, up to :data:`BATCH`, until
    neither bound is exceeded (``None``: no bound).
    """
    count, size = cursor.execute(_TOTALS).fetchone()
    extra_entries = 0 if max_entries is None else count - max_entries
    extra_bytes = 0 if max_bytes is None else size - max_bytes
    if extra_entries <= 0 and extra_bytes <= 0:
        return Batch((), more=False)
    cursor.execute(least_recently_used_sql(param), (BATCH,))
    keys: list[bytes] = []
    while extra_entries > 0 or extra_bytes > 0:
        row = cursor.fetchone()
        if row is None:
            break
        keys.append(bytes(row[0]))
        extra_entries -= 1
        extra_bytes -= row[1]
    _delete(cursor, param, keys)
    # Fewer rows than asked for and still over: the totals are off (see the
    # schema); stop rather than go round for ever.
    over = extra_entries > 0 or extra_bytes > 0
    return Batch(tuple(keys), more=over and len(keys) == BATCH)


def _delete(cursor: Any, param: str, keys: tuple[bytes, ...] | list[bytes]) -> None:
    if keys:
        cursor.executemany(f"DELETE FROM entries WHERE key = {param}", [(key,) for key in keys])
