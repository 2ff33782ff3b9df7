"""
The cache store: one interface, its change feed, and the factory that opens one from ``--db``.

Everything the engine and the management commands need from storage goes
through :class:`Store`, so that a second engine (PostgreSQL) is one more
dialect under the same adbapi implementation, not a change to its callers.
"""

from __future__ import annotations

from stasis.model import (
    Change,
    ChangeKind,
    Entry,
    EntryFilter,
    EntryInfo,
    Page,
    Saving,
    StoreStats,
)
from stasis.store._feed import ChangeFeed

# The hot map moves into the cache engine; exported here until it has, since the
# service still names it.
from stasis.store._open import open_store
from stasis.store._protocol import (
    EVERY_ENTRY,
    SAVING_COLUMNS,
    BadCursor,
    SavingColumn,
    Store,
    StoreError,
)

__all__ = [
    "EVERY_ENTRY",
    "SAVING_COLUMNS",
    "BadCursor",
    "Change",
    "ChangeFeed",
    "ChangeKind",
    "Entry",
    "EntryFilter",
    "EntryInfo",
    "Page",
    "Saving",
    "SavingColumn",
    "Store",
    "StoreError",
    "StoreStats",
    "open_store",
]
