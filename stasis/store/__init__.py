"""
The cache store: one interface, its change feed, and the adbapi implementation on SQLite.

Everything the engine and the management commands need from storage goes
through :class:`Store`, so that a second engine (PostgreSQL) is one more
implementation, not a change to its callers.
"""

from __future__ import annotations

from stasis.model import Change, ChangeKind, Entry, EntryFilter, EntryInfo, Page, StoreStats
from stasis.store._feed import ChangeFeed
from stasis.store._hot import HotCache
from stasis.store._protocol import Store, StoreError
from stasis.store._sqlite import SQLiteStore

__all__ = [
    "Change",
    "ChangeFeed",
    "ChangeKind",
    "Entry",
    "EntryFilter",
    "EntryInfo",
    "HotCache",
    "Page",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreStats",
]
