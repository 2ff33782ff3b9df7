"""
The JSON shapes stasis reports the cache in, with the original stasis-proxy's
field names: ``GET /health`` and ``GET /stats``, and ``stasis stats --json``,
which must say the same thing in the same words.

Light on purpose (model values in, dicts out): the commands use it without
loading the web server.
"""

from __future__ import annotations

from typing import Any

from stasis.model import StoreStats
from stasis.times import iso8601

__all__ = ["health_json", "stats_json"]


def health_json(stats: StoreStats) -> dict[str, Any]:
    """``GET /health``."""
    return {
        "status": "healthy",
        "cache": {
            "entries": stats.entries,
            "tokensSaved": stats.tokens_saved,
            "dbSizeBytes": stats.db_size_bytes,
        },
    }


def stats_json(stats: StoreStats) -> dict[str, Any]:
    """The fields of ``GET /stats`` that the database alone knows."""
    return {
        "totalEntries": stats.entries,
        "totalTokensSaved": stats.tokens_saved,
        "dbSizeBytes": stats.db_size_bytes,
        "oldestEntry": iso8601(stats.oldest),
        "newestEntry": iso8601(stats.newest),
        "storedBytes": stats.stored_bytes,
    }
