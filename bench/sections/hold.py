"""
(j) Under load, nothing is lost or doubled: 64 clients for 60 s of mixed traffic.

Hits, new misses, misses several clients send at once, and streams among them
(``bench/mixed.py``), every answer checked. Afterwards the fake upstream must
have been called exactly once for each distinct miss (single flight held, no
request fetched twice) and the daemon must hold exactly the warmed entries
and one entry for each distinct miss (every miss stored, once).
"""

from __future__ import annotations

import time

from bench.client import get_json
from bench.context import Context
from bench.mixed import Mix, run_tag, warm
from bench.report import Section, Target, ms
from bench.upstream import CALLS_PATH

__all__ = ["KEY", "TITLE", "run"]

KEY = "j"
TITLE = "hold: 64 clients for 60 s of mixed hits, misses and streams"
CLIENTS = 64
WARMED = 60


def upstream_calls(ctx: Context) -> tuple[int, int]:
    """The fake upstream's calls so far, and how many of them repeated an earlier body."""
    counted = get_json(ctx.upstream.url + CALLS_PATH)
    return int(counted["calls"]), int(counted["repeated"])


def settled_entries(url: str, expected: int, deadline: float = 30.0) -> int:
    """``/stats`` totalEntries once it reaches ``expected`` (commits trail answers), or at last."""
    end = time.monotonic() + deadline
    while True:
        entries = int(get_json(url + "/stats")["totalEntries"])
        if entries >= expected or time.monotonic() > end:
            return entries
        time.sleep(0.1)


def run(ctx: Context) -> Section:
    seconds = 10.0 if ctx.quick else 60.0
    stasis = ctx.stasis("hold")
    tag = run_tag()
    warmed = warm(stasis.url, WARMED, tag)
    before = upstream_calls(ctx)
    tally = Mix(stasis.url, warmed, CLIENTS, seconds, tag).run()
    after = upstream_calls(ctx)
    calls, repeated = after[0] - before[0], after[1] - before[1]
    distinct = len(tally.misses)
    entries = settled_entries(stasis.url, WARMED + distinct)
    stasis.stop()
    stored = entries - WARMED
    section = Section(
        KEY,
        TITLE,
        header=[
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "distinct misses",
            "upstream calls",
            "entries stored",
        ],
        rows=[
            [
                f"{tally.requests:,}",
                f"{tally.requests / seconds:,.0f}",
                ms(tally.percentile(0.5) * 1e6),
                ms(tally.percentile(0.99) * 1e6),
                str(len(tally.errors)),
                f"{distinct:,}",
                f"{calls:,}",
                f"{stored:,}",
            ]
        ],
        notes=[
            f"{CLIENTS} clients for {seconds:.0f} s; {WARMED} warmed requests (a third streams) "
            "are the hits; Python clients, so req/s is theirs as much as stasis's",
            *[f"error: {error}" for error in tally.errors[:5]],
            *[
                line
                for line in ctx.upstream.log_tail(400).splitlines()
                if line.startswith("repeated body")
            ][-5:],
        ],
        data={
            "requests": tally.requests,
            "seconds": seconds,
            "errors": tally.errors[:50],
            "distinct_misses": distinct,
            "upstream_calls": calls,
            "repeated_calls": repeated,
            "entries_stored": stored,
        },
    )
    section.targets = [
        Target("errors under mixed load", len(tally.errors), 0, "errors"),
        Target("requests fetched twice under mixed load", repeated, 0, "calls"),
        Target(
            "upstream calls - distinct misses",
            abs(calls - distinct),
            0,
            "calls",
            note=f"{calls} calls for {distinct} misses",
        ),
        Target(
            "entries stored - distinct misses",
            abs(stored - distinct),
            0,
            "entries",
            note=f"{stored} stored for {distinct} misses",
        ),
    ]
    return section
