"""
(l) A soak: five minutes of mixed traffic, the daemon's memory and descriptors sampled.

The same mix as the hold section (``bench/mixed.py``) from 8 clients, with
the in-memory hot map bounded at 8 MB so that it is full within the first
minute: what the daemon holds then is what it needs. Growth is measured from
the end of the first minute to the end, so a leak (a request, a connection, a
timer or a Deferred kept per request) shows as growth and a cache filling up
does not. Descriptors are counted at rest, before the load and after it
ended and its connections closed.
"""

from __future__ import annotations

import os
import threading
import time

from bench.context import Context
from bench.mixed import Mix, warm
from bench.report import Section, Target
from bench.rss import MIB, memory
from bench.sections.hold import settled_entries, upstream_calls

__all__ = ["KEY", "TITLE", "run"]

KEY = "l"
TITLE = "soak: 5 minutes of mixed traffic, RSS and descriptors"
CLIENTS = 8
WARMED = 60
SAMPLE_SECONDS = 5.0
GROWTH_LIMIT_MIB = 50.0


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def descriptors_at_rest(pid: int, at_most: int, deadline: float = 10.0) -> int:
    """The daemon's descriptors once closed connections are gone (or at the deadline)."""
    end = time.monotonic() + deadline
    while True:
        count = descriptors(pid)
        if count <= at_most or time.monotonic() > end:
            return count
        time.sleep(0.1)


def run(ctx: Context) -> Section:
    seconds = 60.0 if ctx.quick else 300.0
    settle = seconds / 5
    stasis = ctx.stasis("soak", None, "--memory-cache", "8MB")
    warmed = warm(stasis.url, WARMED)
    fds_before = descriptors(stasis.pid)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(SAMPLE_SECONDS):
            samples.append((time.monotonic() - started, memory(stasis.pid)["VmRSS"]))

    before = upstream_calls(ctx)
    mix = Mix(stasis.url, warmed, CLIENTS, seconds)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tally = mix.run()
    stop.set()
    sampler.join()
    after = upstream_calls(ctx)
    calls, repeated = after[0] - before[0], after[1] - before[1]
    entries = settled_entries(stasis.url, WARMED + len(tally.misses))
    fds_after = descriptors_at_rest(stasis.pid, fds_before)
    hwm = memory(stasis.pid)["VmHWM"]
    stasis.stop()

    settled = [rss for at, rss in samples if at >= settle]
    baseline = settled[0] if settled else 0
    growth = (max(settled) - baseline) / MIB if settled else float("nan")
    section = Section(
        KEY,
        TITLE,
        header=["at", "VmRSS MiB"],
        rows=[
            [f"{at:.0f} s", f"{rss / MIB:.1f}"]
            for at, rss in samples[:: max(1, len(samples) // 10)]
        ],
        notes=[
            f"{tally.requests:,} requests from {CLIENTS} clients in {seconds:.0f} s, "
            f"{len(tally.errors)} errors; {len(tally.misses):,} distinct misses, "
            f"{calls:,} upstream calls, {entries - WARMED:,} entries stored",
            f"RSS growth after the first {settle:.0f} s: {growth:.1f} MiB (peak VmHWM "
            f"{hwm / MIB:.1f} MiB); descriptors at rest {fds_before} before, {fds_after} after",
            *[f"error: {error}" for error in tally.errors[:5]],
        ],
        data={
            "seconds": seconds,
            "requests": tally.requests,
            "errors": tally.errors[:50],
            "samples": samples,
            "growth_mib": growth,
            "fds_before": fds_before,
            "fds_after": fds_after,
            "distinct_misses": len(tally.misses),
            "upstream_calls": calls,
            "entries_stored": entries - WARMED,
        },
    )
    section.targets = [
        Target(
            f"RSS growth over a {seconds / 60:.0f}-minute soak",
            growth,
            GROWTH_LIMIT_MIB,
            "MiB",
            note=f"from {settle:.0f} s on",
        ),
        Target("descriptor growth at rest after a soak", fds_after - fds_before, 0, "fds"),
        Target("errors during a soak", len(tally.errors), 0, "errors"),
        Target("requests fetched twice during a soak", repeated, 0, "calls"),
    ]
    return section
