"""
(l) A soak: five minutes of mixed traffic, the daemon's memory and descriptors sampled.

The same mix as the hold section (``bench/mixed.py``) from 8 clients, with
the in-memory hot map bounded at 8 MB so that it is full within the first
minute: what the daemon holds then is what it needs. Growth is measured from
the end of the first minute to the end, so a leak (a request, a connection, a
timer or a Deferred kept per request) shows as growth and a cache filling up
does not. Descriptors are counted at rest (the clients' connections
closed) after five seconds of the same traffic (the upstream connection
pool and the database's reader threads grown to what the load needs) and
again after the soak: a leak is growth at rest. Sampled with the memory
under load, they also count the connections in flight at that moment.
"""

from __future__ import annotations

import os
import threading
import time

from bench.context import Context
from bench.mixed import Mix, run_tag, warm
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


def descriptors_at_rest(pid: int, deadline: float = 10.0) -> int:
    """The daemon's descriptors once closed connections are gone: unchanged for a second."""
    end = time.monotonic() + deadline
    count, since = descriptors(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = descriptors(pid)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            break
    return count


def run(ctx: Context) -> Section:
    seconds = 60.0 if ctx.quick else 300.0
    settle = seconds / 5
    stasis = ctx.stasis("soak", None, "--memory-cache", "8MB")
    tag = run_tag()
    warmed = warm(stasis.url, WARMED, tag)
    # A short run of the same traffic first, so that the connection pool to
    # the upstream and the threads have grown to what this load needs: what
    # grows after that is what the soak is looking for.
    first = Mix(stasis.url, warmed, CLIENTS, 5.0, tag + "-first").run()
    already = settled_entries(stasis.url, WARMED + len(first.misses))
    fds_before = descriptors_at_rest(stasis.pid)
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(SAMPLE_SECONDS):
            at = time.monotonic() - started
            samples.append((at, memory(stasis.pid)["VmRSS"], descriptors(stasis.pid)))

    before = upstream_calls(ctx)
    mix = Mix(stasis.url, warmed, CLIENTS, seconds, tag)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tally = mix.run()
    stop.set()
    sampler.join()
    after = upstream_calls(ctx)
    calls, repeated = after[0] - before[0], after[1] - before[1]
    entries = settled_entries(stasis.url, already + len(tally.misses))
    fds_after = descriptors_at_rest(stasis.pid)
    hwm = memory(stasis.pid)["VmHWM"]
    stasis.stop()

    settled = [(rss, fds) for at, rss, fds in samples if at >= settle]
    growth = (max(r for r, _ in settled) - settled[0][0]) / MIB if settled else float("nan")
    fd_growth = max(f for _, f in settled) - settled[0][1] if settled else -1
    section = Section(
        KEY,
        TITLE,
        header=["at", "VmRSS MiB", "descriptors"],
        rows=[
            [f"{at:.0f} s", f"{rss / MIB:.1f}", str(fds)]
            for at, rss, fds in samples[:: max(1, len(samples) // 10)]
        ],
        notes=[
            f"{tally.requests:,} requests from {CLIENTS} clients in {seconds:.0f} s, "
            f"{len(tally.errors)} errors; {len(tally.misses):,} distinct misses, "
            f"{calls:,} upstream calls, {entries - already:,} entries stored",
            f"RSS growth after the first {settle:.0f} s: {growth:.1f} MiB (peak VmHWM "
            f"{hwm / MIB:.1f} MiB); descriptors {fd_growth:+d} after the first {settle:.0f} s, "
            f"and at rest {fds_before} before, {fds_after} after",
            *[f"error: {error}" for error in tally.errors[:5]],
        ],
        data={
            "seconds": seconds,
            "requests": tally.requests,
            "errors": tally.errors[:50],
            "samples": samples,
            "growth_mib": growth,
            "fd_growth": fd_growth,
            "fds_before": fds_before,
            "fds_after": fds_after,
            "distinct_misses": len(tally.misses),
            "upstream_calls": calls,
            "entries_stored": entries - already,
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
        Target(
            "descriptor growth at rest after a soak",
            fds_after - fds_before,
            0,
            "fds",
            note=f"under load, from {settle:.0f} s on: {fd_growth:+d} (in flight)",
        ),
        Target("errors during a soak", len(tally.errors), 0, "errors"),
        Target("requests fetched twice during a soak", repeated, 0, "calls"),
        Target(
            "entries stored - distinct misses in a soak",
            abs(entries - already - len(tally.misses)),
            0,
            "entries",
        ),
    ]
    return section
