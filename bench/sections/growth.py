"""
(d) Cost growth: does a hit slow down as the database grows, and how big is an entry?

A cache that is used for months holds a great many answers; a hit should
cost the same with a million entries as with ten thousand (one B-tree probe
more or less), and each entry should take less room than the answer it keeps.
The database is filled directly (see ``bench/populate.py``) around one entry
recorded through stasis, whose hits are then measured at concurrency 1.

When stasis has an in-memory cache in front of the database, one hot request
never reaches SQLite; the hits are then measured a second time with
``--memory-cache 0``, the path every cold entry takes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from attrs import Factory, define

from bench.client import post
from bench.context import Context
from bench.payloads import chat_request
from bench.populate import column_sizes, populate, template_row
from bench.procs import BenchError, stasis_supports
from bench.report import Section, Target, ms, ratio
from bench.wrk import WrkResult

__all__ = ["KEY", "TITLE", "run"]

KEY = "d"
TITLE = "cost growth: hit latency against database size, bytes per entry"
PATH = "/v1/chat/completions"
SIZES = (10_000, 1_000_000)
QUICK_SIZES = (2_000, 50_000)


def _db_bytes(db: Path) -> int:
    return sum(
        os.path.getsize(path)
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
        if path.exists()
    )


def _measure(ctx: Context, db: Path, body: bytes, body_file: Path, *extra: str) -> WrkResult:
    stasis = ctx.stasis("growth", db, *extra)
    try:
        url = stasis.url + PATH
        status = post(url, body).cache_status
        if status != "HIT":
            raise BenchError(f"the recorded request is {status} after populating, not HIT")
        ctx.load(url, body_file, 1, seconds=ctx.warmup)
        return ctx.load(url, body_file, 1)
    finally:
        stasis.stop()


def _fill(db: Path, template: dict[str, Any], count: int, seed: int) -> float:
    """Add ``count`` entries; the seconds it took."""
    started = time.monotonic()
    populate(db, template, count, seed)
    return time.monotonic() - started


def run(ctx: Context) -> Section:
    sizes = QUICK_SIZES if ctx.quick else SIZES
    db = ctx.scratch / "growth.db"
    body = chat_request("growth")
    body_file = ctx.file("growth.json", body)
    stasis = ctx.stasis("growth", db)
    statuses = [post(stasis.url + PATH, body).cache_status for _ in range(2)]
    stasis.stop()
    if statuses != ["MISS", "HIT"]:
        raise BenchError(f"recording the growth request gave {statuses}, not MISS then HIT")
    template = template_row(db)

    section = Section(
        KEY,
        TITLE,
        header=[
            "entries",
            "fill s",
            "hits/s",
            "p50 ms",
            "p99 ms",
            "store-only/s",
            "p50 ms",
            "db bytes",
            "B/entry",
            "/raw body",
        ],
    )
    store_only = stasis_supports("--memory-cache")
    small, large = sizes
    small_copy = ctx.scratch / "growth-small.db"
    first = _Run(f"{small:,}", db, small)
    big = _Run(f"{large:,}", db, large)
    again = _Run(f"{small:,} again", small_copy, small)
    first.fill_seconds = _fill(db, template, small - 1, small)
    shutil.copyfile(db, small_copy)

    def measure(run_: _Run) -> None:
        run_.hits = _measure(ctx, run_.db, body, body_file)
        if store_only:
            run_.store = _measure(ctx, run_.db, body, body_file, "--memory-cache", "0")
        run_.measure_file()
        section.rows.append(run_.row())

    measure(first)
    big.fill_seconds = _fill(db, template, large - small, large)
    measure(big)
    measure(again)
    runs = [first, big, again]
    last = big.columns
    section.notes.append(
        f"per entry: raw answer {last['raw_body']:,.0f} B, stored value (packed headers and "
        f"body) {last['stored_body']:,.0f} B, separate headers {last['headers']:,.0f} B; "
        "the rest is key, other columns, two indexes and page slack"
    )
    section.notes.append(
        f"the {small:,} database is measured before and after the {large:,} one (a copy); "
        "the ratio uses its faster p50, the stricter comparison"
    )
    section.data = {"runs": {run_.label: run_.as_json() for run_ in runs}}
    growth = f"hit p50 at {large:,} / at {small:,}"

    def p50(result: WrkResult | None) -> float:
        return math.inf if result is None else result.p50_us

    section.targets = [
        Target(growth, ratio(big.hits_p50, min(first.hits_p50, again.hits_p50)), 1.2, "x")
    ]
    if store_only:
        smallest = min(p50(first.store), p50(again.store))
        section.targets.append(
            Target(
                growth + " (store)",
                ratio(p50(big.store), smallest),
                1.2,
                "x",
                note="--memory-cache 0",
            )
        )
    else:
        section.notes.append("this stasis has no --memory-cache: every hit reads the database")
    section.targets.append(
        Target("db bytes per entry / raw body bytes", big.per_entry_ratio, 0.6, "x")
    )
    return section


@define
class _Run:
    """One database measured: its hits (default and store-only) and its size on disk."""

    label: str
    db: Path
    entries: int
    fill_seconds: float | None = None
    hits: WrkResult | None = None
    store: WrkResult | None = None
    total_bytes: int = 0
    columns: dict[str, float] = Factory(dict)

    def measure_file(self) -> None:
        self.total_bytes = _db_bytes(self.db)
        self.columns = column_sizes(self.db)

    @property
    def hits_p50(self) -> float:
        return math.inf if self.hits is None else self.hits.p50_us

    @property
    def per_entry(self) -> float:
        return self.total_bytes / self.entries

    @property
    def per_entry_ratio(self) -> float:
        return ratio(self.per_entry, self.columns.get("raw_body", 0.0))

    def row(self) -> list[str]:
        assert self.hits is not None
        return [
            self.label,
            "-" if self.fill_seconds is None else f"{self.fill_seconds:.1f}",
            f"{self.hits.rps:,.0f}",
            ms(self.hits.p50_us),
            ms(self.hits.p99_us),
            "-" if self.store is None else f"{self.store.rps:,.0f}",
            "-" if self.store is None else ms(self.store.p50_us),
            f"{self.total_bytes:,}",
            f"{self.per_entry:,.0f}",
            f"{self.per_entry_ratio:.2f}",
        ]

    def as_json(self) -> dict[str, object]:
        return {
            "entries": self.entries,
            "fill_seconds": self.fill_seconds,
            "hits": None if self.hits is None else self.hits.as_json(),
            "hits_store_only": None if self.store is None else self.store.as_json(),
            "db_bytes": self.total_bytes,
            "bytes_per_entry": self.per_entry,
            "columns": self.columns,
        }
