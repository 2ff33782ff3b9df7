"""
(f) Eviction: what a size bound costs the hits while it is being enforced.

Two daemons with the same database contents and the same background load of
new misses (a steady rate, from a few paced threads of the harness): one
started with ``--max-size`` small enough that every miss takes it over, so
the housekeeping evicts all the time; one without a bound. Hit throughput is
measured against both with wrk, as in the hits section, in alternating
rounds whose order flips (``bench/rounds.py``); the bounded daemon's must
stay within 5 % of the unbounded one's.

Eviction runs in the store's writer thread, in small transactions, and
publishes each evicted key to the in-memory layers: what the hits can feel is
the GIL and the reactor's share of that work, which is what this measures.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import define, field

from bench.client import get_json, post
from bench.context import Context
from bench.payloads import ID_MARK, chat_request
from bench.procs import BenchError, Process, stasis_supports
from bench.report import Section, Target, ms, ratio
from bench.rounds import Rounds, alternate
from bench.wrk import WrkResult

__all__ = ["KEY", "TITLE", "run"]

KEY = "f"
TITLE = "hit throughput while --max-size evicts in the background, vs no bound"
CONCURRENCY = (1, 16)
PATH = "/v1/chat/completions"
#: Small enough that the database reaches it in a few seconds of misses.
MAX_SIZE = "4MB"
#: New misses a second sent to each daemon while its hits are measured.
MISS_RATE = 100
MISS_THREADS = 4
#: More rounds than other sections: the difference sought is a few percent,
#: about what one round drifts from the next on a small shared machine.
ROUNDS = 5


@define
class _Misses:
    """A steady stream of new misses to one daemon from a few paced threads, while on."""

    url: str
    template: bytes
    label: str
    rate: float = MISS_RATE
    sent: int = 0
    failed: int = 0
    _serial: Iterator[int] = field(factory=itertools.count)
    _stop: threading.Event = field(factory=threading.Event)
    _lock: threading.Lock = field(factory=threading.Lock)

    def _body(self) -> bytes:
        with self._lock:
            n = next(self._serial)
        return self.template.replace(ID_MARK.encode(), f"{self.label}-{n}".encode())

    def _send(self, gap: float) -> None:
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.netloc, timeout=30)
        due = time.monotonic()
        try:
            while not self._stop.is_set():
                connection.request(
                    "POST", parts.path, self._body(), {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
                with self._lock:
                    if response.status == 200 and response.getheader("x-stasis-status") == "MISS":
                        self.sent += 1
                    else:
                        self.failed += 1
                due += gap
                self._stop.wait(max(0.0, due - time.monotonic()))
        finally:
            connection.close()

    @contextmanager
    def running(self) -> Iterator[None]:
        self._stop.clear()
        gap = MISS_THREADS / self.rate
        threads = [
            threading.Thread(target=self._send, args=(gap,), daemon=True)
            for _ in range(MISS_THREADS)
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=30)


@define
class _Side:
    """One daemon, bounded or not, with its background misses and what they did."""

    name: str
    process: Process
    misses: _Misses
    evictions: int = 0
    miss_seconds: float = 0.0

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = get_json(self.process.url + "/stats")
        return stats

    def stat(self, name: str) -> int:
        return int(self.stats()[name])

    def measure(self, ctx: Context, body_file: Path, c: int, seconds: float) -> WrkResult:
        """Hits with wrk for ``seconds``, new misses in the background meanwhile."""
        before = self.stat("evictions")
        started = time.monotonic()
        with self.misses.running():
            result = ctx.load(self.process.url + PATH, body_file, c, seconds=seconds)
        self.miss_seconds += time.monotonic() - started
        self.evictions += self.stat("evictions") - before
        return result

    @property
    def miss_rate(self) -> float:
        return self.misses.sent / self.miss_seconds if self.miss_seconds else 0.0


def _start(ctx: Context, name: str, hit: bytes, template: bytes, *extra: str) -> _Side:
    process = ctx.stasis(f"eviction-{name}", None, "--log-level", "warn", *extra)
    url = process.url + PATH
    statuses = [post(url, hit).cache_status for _ in range(2)]
    if statuses != ["MISS", "HIT"]:
        raise BenchError(f"the hit request gave {statuses} on the {name} daemon, not MISS, HIT")
    return _Side(name, process, _Misses(url, template, f"{name}-{time.time_ns()}"))


def _fill(ctx: Context, side: _Side, miss_file: Path, until: Callable[[], bool]) -> None:
    """Misses at full speed until ``until()`` (at most a minute)."""
    deadline = time.monotonic() + 60
    for n in itertools.count():
        if until():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"the {side.name} daemon did not fill in a minute")
        nonce = f"{side.misses.label}-fill-{n}"
        ctx.load(side.process.url + PATH, miss_file, 16, unique=True, nonce=nonce, seconds=1)


def _row(c: int, b: Rounds, u: Rounds) -> list[str]:
    return [
        str(c),
        f"{b.rps:,.0f}",
        ms(b.p50_us),
        ms(b.p99_us),
        f"{u.rps:,.0f}",
        ms(u.p50_us),
        ms(u.p99_us),
        f"{ratio(b.rps, u.rps):.3f}",
        f"{ratio(b.p50_us, u.p50_us):.2f}",
    ]


def run(ctx: Context) -> Section:
    if not stasis_supports("--max-size"):
        return Section(KEY, TITLE, notes=["n/a: this stasis has no --max-size"])
    hit = chat_request("eviction-hit")
    template = chat_request(ID_MARK)
    hit_file = ctx.file("eviction-hit.json", hit)
    miss_file = ctx.file("eviction-miss.json", template)
    bounded = _start(ctx, "bounded", hit, template, "--max-size", MAX_SIZE)
    unbounded = _start(ctx, "unbounded", hit, template)
    bound = bounded.stat("maxSizeBytes")

    # Fill the bounded daemon until it evicts; the other to as many entries.
    _fill(ctx, bounded, miss_file, lambda: bounded.stat("evictions") > 0)
    held = bounded.stat("totalEntries")
    _fill(ctx, unbounded, miss_file, lambda: unbounded.stat("totalEntries") >= held)
    for side in (bounded, unbounded):
        ctx.load(side.process.url + PATH, hit_file, 16, seconds=ctx.warmup)
        side.evictions = 0

    results: dict[int, tuple[Rounds, Rounds]] = {}
    seconds = ctx.duration / 2
    for c in CONCURRENCY:
        b, u = alternate(
            [partial(side.measure, ctx, hit_file, c, seconds) for side in (bounded, unbounded)],
            rounds=ROUNDS,
        )
        results[c] = (b, u)
    end = {side.name: side.stats() for side in (bounded, unbounded)}
    for side in (bounded, unbounded):
        side.process.stop()

    stored = int(end["bounded"]["storedBytes"])
    section = Section(
        KEY,
        TITLE,
        header=[
            "conc",
            "bounded/s",
            "p50 ms",
            "p99 ms",
            "no bound/s",
            "p50 ms",
            "p99 ms",
            "thr ratio",
            "p50 ratio",
        ],
        rows=[_row(c, b, u) for c, (b, u) in results.items()],
        notes=[
            f"--max-size {MAX_SIZE} ({bound:,} B): {end['bounded']['totalEntries']:,} entries, "
            f"{stored:,} B stored at the end; {bounded.evictions:,} evictions while measured, "
            f"{ratio(bounded.evictions, bounded.miss_seconds):.0f}/s",
            f"background misses while measured: {bounded.miss_rate:.0f}/s bounded, "
            f"{unbounded.miss_rate:.0f}/s unbounded (target {MISS_RATE}/s from {MISS_THREADS} "
            f"threads; {bounded.misses.failed + unbounded.misses.failed} not a MISS); "
            f"the unbounded daemon ends with {end['unbounded']['totalEntries']:,} entries",
            f"{ROUNDS} alternating rounds per side and concurrency; each figure is the median "
            "of the rounds, p99 the worst round's",
        ],
        data={
            "max_size_bytes": bound,
            "miss_rate_target": MISS_RATE,
            "sides": {
                side.name: {
                    "evictions_while_measured": side.evictions,
                    "miss_rate": round(side.miss_rate, 1),
                    "misses_not_miss": side.misses.failed,
                    "stats_at_end": end[side.name],
                }
                for side in (bounded, unbounded)
            },
            "runs": {
                str(c): {"bounded": b.as_json(), "unbounded": u.as_json()}
                for c, (b, u) in results.items()
            },
        },
    )
    b16, u16 = results[16]
    section.targets = [
        Target(
            "hit throughput c=16 evicting / unbounded",
            ratio(b16.rps, u16.rps),
            0.95,
            "x",
            at_most=False,
            note=f"{MISS_RATE} misses/s in the background on both",
        )
    ]
    if bounded.evictions == 0:
        section.notes.append("WARNING: nothing was evicted while measuring: the bound never bit")
    return section
