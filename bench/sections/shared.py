"""
(h) A shared cache: hits and misses on PostgreSQL against the same on SQLite.

Four daemons with the same options but their database: an SQLite file, or a
PostgreSQL database on a throwaway server on loopback (started here, as the
tests start theirs, and removed after). Hits are measured with the in-memory
hot map in front of the database (the default: a repeated request never
reaches it, on either engine) and without it (``--memory-cache 0``: every hit
is a lookup, the path a cold entry takes), at concurrency 1 and 16; misses
(each request a new key, stored) at concurrency 16. Each pair alternates in
rounds whose order flips (``bench/rounds.py``).

A shared store costs what only a shared store needs: on PostgreSQL (and on a
file several workers share) a miss first takes the key's claim, so that
daemons sharing it make one upstream call for it, and nothing in memory may
say a key is absent.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

from bench.client import post
from bench.context import Context
from bench.payloads import ID_MARK, chat_request
from bench.procs import BenchError
from bench.report import Section, ms, ratio
from bench.rounds import ROUNDS, Rounds, alternate
from bench.wrk import WrkResult

__all__ = ["KEY", "TITLE", "run"]

KEY = "h"
TITLE = "a shared cache: hits and misses on PostgreSQL vs SQLite"
PATH = "/v1/chat/completions"
HIT_CONCURRENCY = (1, 16)
MISS_CONCURRENCY = 16


def _postgres(stack: ExitStack) -> str | None:
    """A database on a throwaway server, or None when this machine has no PostgreSQL."""
    try:
        import psycopg  # noqa: F401

        from tests import postgres_support
    except ImportError:
        return None
    if postgres_support._binaries() is None:
        return None
    cluster = postgres_support.Cluster.create()
    stack.callback(cluster.remove)
    postgres_support.admin(cluster.url, "CREATE DATABASE stasis_bench")
    return postgres_support.with_database(cluster.url, "stasis_bench")


def run(ctx: Context) -> Section:
    section = Section(
        KEY,
        TITLE,
        header=["load", "conc", "sqlite/s", "p50 ms", "postgres/s", "p50 ms", "pg/sqlite thr"],
    )
    database = _postgres(ctx.stack)
    if database is None:
        section.notes.append("skipped: no PostgreSQL server binaries (initdb, pg_ctl) or psycopg")
        return section
    body = chat_request("shared")
    body_file = ctx.file("shared.json", body)
    template_file = ctx.file("shared-miss.json", chat_request(ID_MARK))
    results: dict[tuple[str, int], tuple[Rounds, Rounds]] = {}
    seconds = ctx.duration / 2
    for label, extra in (("hits, hot map", ()), ("hits, store only", ("--memory-cache", "0"))):
        urls = []
        for db in (str(ctx.scratch / f"shared-{len(extra)}.db"), database):
            stasis = ctx.stasis("shared", db, *extra)  # type: ignore[arg-type]
            url = stasis.url + PATH
            statuses = [post(url, body).cache_status for _ in range(2)]
            if statuses[1] != "HIT":
                raise BenchError(f"the shared request gave {statuses} on {db}, not a HIT after")
            ctx.load(url, body_file, 16, seconds=ctx.warmup)
            urls.append(url)
        for c in HIT_CONCURRENCY:
            lite, pg = alternate(
                [partial(ctx.load, url, body_file, c, seconds=seconds) for url in urls]
            )
            results[(label, c)] = (lite, pg)
    run_id = str(time.time_ns())
    counter = itertools.count()
    urls = []
    for db in (str(ctx.scratch / "shared-misses.db"), database):
        stasis = ctx.stasis("shared-misses", db)  # type: ignore[arg-type]
        urls.append(stasis.url + PATH)
        ctx.load(urls[-1], template_file, 16, unique=True, nonce=f"{run_id}-w", seconds=ctx.warmup)

    def misses(url: str) -> Callable[[], WrkResult]:
        def load() -> WrkResult:
            nonce = f"{run_id}-{next(counter)}"
            return ctx.load(
                url, template_file, MISS_CONCURRENCY, unique=True, nonce=nonce, seconds=seconds
            )

        return load

    lite, pg = alternate([misses(url) for url in urls])
    results[("misses", MISS_CONCURRENCY)] = (lite, pg)
    for (label, c), (lite, pg) in results.items():
        section.rows.append(
            [
                label,
                str(c),
                f"{lite.rps:,.0f}",
                ms(lite.p50_us),
                f"{pg.rps:,.0f}",
                ms(pg.p50_us),
                f"{ratio(pg.rps, lite.rps):.2f}",
            ]
        )
    errors = sum(lite.error_count + pg.error_count for lite, pg in results.values())
    section.notes += [
        "PostgreSQL 15 on loopback, on the same two cores as wrk, the daemons and the upstream",
        f"{ROUNDS} alternating rounds per pair; medians; {errors} wrk errors",
    ]
    section.data = {
        f"{label} c={c}": {"sqlite": lite.as_json(), "postgres": pg.as_json()}
        for (label, c), (lite, pg) in results.items()
    }
    return section
