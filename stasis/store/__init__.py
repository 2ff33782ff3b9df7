"""
The cache store: one interface, and the adbapi implementation on SQLite.

Everything the proxy and the management commands need from storage goes
through :class:`Store`, so that a second engine (PostgreSQL) is one more
implementation, not a change to its callers.
"""

from __future__ import annotations

from stasis.store._entry import Entry, StoreStats, TokenUsage
from stasis.store._hot import HotCache
from stasis.store._protocol import Store
from stasis.store._sqlite import SQLiteStore, StoreError

__all__ = ["Entry", "HotCache", "SQLiteStore", "Store", "StoreError", "StoreStats", "TokenUsage"]
