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

A hit takes a fifth of a millisecond, so drift in the machine between two
runs is as large as what is measured: both databases are served at once, by
two daemons, and measured in alternating rounds (``bench/rounds.py``), and
each is reported by the median of its rounds.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from attrs import Factory, define

from bench.client import post
from bench.context import Context
from bench.payloads import chat_request
from bench.populate import column_sizes, populate, template_row
from bench.procs import BenchError, stasis_supports
from bench.report import Section, Target, ms, ratio
from bench.rounds import ROUNDS, Rounds, alternate

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


def _measure_both(
    ctx: Context, runs: list[_Run], body: bytes, body_file: Path, *extra: str
) -> list[Rounds]:
    """Serve every database at once and measure them in alternating rounds."""
    with ExitStack() as stack:
        urls = []
        for run_ in runs:
            stasis = ctx.stasis("growth", run_.db, *extra)
            stack.callback(stasis.stop)
            url = stasis.url + PATH
            status = post(url, body).cache_status
            if status != "HIT":
                raise BenchError(f"the recorded request is {status} after populating, not HIT")
            ctx.load(url, body_file, 1, seconds=ctx.warmup)
            urls.append(url)
        seconds = ctx.duration / 2
        return alternate([partial(ctx.load, url, body_file, 1, seconds=seconds) for url in urls])


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
    little = _Run(f"{small:,}", small_copy, small)
    big = _Run(f"{large:,}", db, large)
    little.fill_seconds = _fill(db, template, small - 1, small)
    shutil.copyfile(db, small_copy)
    big.fill_seconds = _fill(db, template, large - small, large)
    runs = [little, big]
    for run_, hits in zip(runs, _measure_both(ctx, runs, body, body_file), strict=True):
        run_.hits = hits
    if store_only:
        both = _measure_both(ctx, runs, body, body_file, "--memory-cache", "0")
        for run_, hits in zip(runs, both, strict=True):
            run_.store = hits
    for run_ in runs:
        run_.measure_file()
        section.rows.append(run_.row())
    last = big.columns
    section.notes.append(
        f"per entry: raw answer {last['raw_body']:,.0f} B, stored value (packed headers and "
        f"body) {last['stored_body']:,.0f} B, separate headers {last['headers']:,.0f} B; "
        "the rest is key, other columns, two indexes and page slack"
    )
    section.notes.append(
        f"both databases served at once and measured in {ROUNDS} alternating rounds at c=1; "
        "each figure is the median of the rounds, p99 the worst round's"
    )
    section.data = {"runs": {run_.label: run_.as_json() for run_ in runs}}
    growth = f"hit p50 at {large:,} / at {small:,}"
    section.targets = [Target(growth, ratio(big.hits_p50, little.hits_p50), 1.2, "x")]
    if store_only:
        section.targets.append(
            Target(
                growth + " (store)",
                ratio(big.store_p50, little.store_p50),
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
    hits: Rounds | None = None
    store: Rounds | None = None
    total_bytes: int = 0
    columns: dict[str, float] = Factory(dict)

    def measure_file(self) -> None:
        self.total_bytes = _db_bytes(self.db)
        self.columns = column_sizes(self.db)

    @property
    def hits_p50(self) -> float:
        return math.inf if self.hits is None else self.hits.p50_us

    @property
    def store_p50(self) -> float:
        return math.inf if self.store is None else self.store.p50_us

    @property
    def per_entry(self) -> float:
        return self.total_bytes / self.entries

    @property
    def per_entry_ratio(self) -> float:
        return ratio(self.per_entry, self.columns.get("raw_body", 0.0))

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "fill_seconds": self.fill_seconds,
            "hits": None if self.hits is None else self.hits.as_json(),
            "store_only": None if self.store is None else self.store.as_json(),
            "db_bytes": self.total_bytes,
            "bytes_per_entry": self.per_entry,
            "columns": self.columns,
        }

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
