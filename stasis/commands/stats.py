"""
``stasis stats``: the figures ``GET /stats`` reports from the database, without a daemon.

``--json`` uses the endpoint's field names, so a script can read either. The
daemon's counters since it started (hits, misses) are the daemon's: only
``/stats`` has them.
"""

from __future__ import annotations

import json

from stasis.commands._command import Command, Console
from stasis.commands._human import size
from stasis.commands._options import CommandOptions
from stasis.reports import stats_json
from stasis.store import Store
from stasis.times import iso8601

__all__ = ["STATS", "stats_json"]


class StatsOptions(CommandOptions):
    synopsis = "[options]"
    longdesc = (
        "The cache's figures, as GET /stats reports them: entries, tokens saved by hits, "
        "the database's size, what the entries take in it (what --max-size bounds), "
        "the oldest and the newest entry (UTC)."
    )
    optFlags = [["json", None, "Print one JSON object with the field names of GET /stats."]]
    examples = ("stasis stats", "stasis stats --json -d ~/.stasis/cache.db")


async def run(store: Store, options: StatsOptions, console: Console) -> None:
    stats = await store.stats()
    if options["json"]:
        console.out(json.dumps(stats_json(stats), indent=2))
        return
    rows = [
        ("entries", f"{stats.entries:,}"),
        ("tokens saved", f"{stats.tokens_saved:,}"),
        ("database size", f"{size(stats.db_size_bytes)} ({stats.db_size_bytes:,} bytes)"),
        ("stored size", f"{size(stats.stored_bytes)} ({stats.stored_bytes:,} bytes)"),
        ("oldest entry", iso8601(stats.oldest) or "-"),
        ("newest entry", iso8601(stats.newest) or "-"),
    ]
    for name, value in rows:
        console.out(f"{name:<14} {value}")


STATS = Command("stats", "Show the cache's figures (as GET /stats).", StatsOptions, run)
