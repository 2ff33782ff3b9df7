"""
(m) The web UI open: does a person watching ``/_stasis/`` slow the proxy down?

The page polls the admin API (recent requests every 1.5 s, the figures and
the per-minute chart every 5 s) from the same reactor that answers hits, and
an entries page reads a database that holds many entries. Hits are measured
at c=16 against a daemon over a database filled with 100,000 entries
(``bench/populate.py``; quick: 10,000) in three ways, in alternating rounds
(``bench/rounds.py``):

- nobody watching;
- the real page open in a headless Debian chromium (Playwright,
  ``bench/uiwatch.py``), when both are installed: the whole cost, the
  browser's CPU on the machine included (it shares two cores with wrk and
  the daemon);
- an HTTP poller making the page's calls at least as often, without a
  browser: the daemon's side of the cost alone.

The watcher starts before its run and is stopped after it, so the runs
without it have no browser in the background at all.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from attrs import define, field

from bench.client import get_json, post
from bench.context import Context
from bench.cpu import children, cpu_seconds
from bench.payloads import chat_request
from bench.populate import populate, template_row
from bench.procs import BenchError, Process, spawn
from bench.report import Section, Target, ms, ratio
from bench.rounds import ROUNDS, Rounds, alternate
from bench.uiwatch import browser_available
from bench.wrk import WrkResult

__all__ = ["KEY", "TITLE", "run"]

KEY = "m"
TITLE = "hit throughput with the web UI open and polling, against nobody watching"
PATH = "/v1/chat/completions"
ENTRIES = 100_000
QUICK_ENTRIES = 10_000
CONCURRENCY = 16
#: Seconds the watcher polls before the load starts: its first, heavier calls are done.
SETTLE_SECONDS = 2.0
_WATCHING = re.compile(r"watching http://127\.0\.0\.1:(\d+)")
_SUMMARY = re.compile(r"^UIWATCH (.*)$", re.MULTILINE)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (the Playwright driver, chromium's processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


@define
class _Watched:
    """The runs with one kind of watcher: its CPU and what it asked, per run."""

    mode: str
    #: How ``bench.uiwatch`` is told to watch.
    flags: tuple[str, ...]
    cpu_seconds: list[float] = field(factory=list)
    wall_seconds: list[float] = field(factory=list)
    summaries: list[dict[str, Any]] = field(factory=list)

    @property
    def cores(self) -> float:
        """The watcher's CPU over the runs' wall time: how much of a core it kept busy."""
        return sum(self.cpu_seconds) / sum(self.wall_seconds) if self.wall_seconds else 0.0

    @property
    def calls_per_second(self) -> float:
        calls = sum(sum(s["requests"].values()) for s in self.summaries)
        seconds = sum(s["seconds"] for s in self.summaries)
        return calls / seconds if seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(sum(s["failed"].values()) for s in self.summaries)

    def run(self, ctx: Context, daemon: str, load: Callable[[], WrkResult]) -> WrkResult:
        """``load()`` with the UI watched meanwhile."""
        with ExitStack() as stack:
            argv = [sys.executable, "-m", "bench.uiwatch", daemon, *self.flags]
            watcher: Process = spawn(stack, f"uiwatch-{self.mode}", argv, ctx.scratch, _WATCHING)
            time.sleep(SETTLE_SECONDS)
            tree = _tree(watcher.pid)
            before = sum(cpu_seconds(pid) for pid in tree)
            started = time.monotonic()
            result = load()
            self.wall_seconds.append(time.monotonic() - started)
            self.cpu_seconds.append(sum(cpu_seconds(pid) for pid in tree) - before)
            watcher.stop()
            found = _SUMMARY.search(watcher.log.read_text(errors="replace"))
            if found is None:
                raise BenchError(f"the {self.mode} watcher did not report:\n{watcher.log_tail()}")
            self.summaries.append(json.loads(found.group(1)))
        return result

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "cores": round(self.cores, 3),
            "api_calls_per_second": round(self.calls_per_second, 2),
            "failed": self.failed,
            "watches": self.summaries,
        }


@define
class _DaemonCpu:
    """
    The daemon's CPU per hit over one side's runs (the API calls it served
    beside them included, and the queries its threads ran for them): moved far
    less than throughput by other work on the machine, which mostly delays the
    daemon rather than making its work dearer.
    """

    pid: int
    load: Callable[[], WrkResult]
    seconds: float = 0.0
    requests: int = 0

    def __call__(self) -> WrkResult:
        before = cpu_seconds(self.pid)
        result = self.load()
        self.seconds += cpu_seconds(self.pid) - before
        self.requests += result.requests
        return result

    @property
    def us_per_hit(self) -> float:
        return self.seconds / self.requests * 1e6 if self.requests else math.inf


def _recorded(ctx: Context, db: Path, body: bytes) -> None:
    """One entry recorded through stasis, the request the load sends."""
    stasis = ctx.stasis("ui-record", db)
    statuses = [post(stasis.url + PATH, body).cache_status for _ in range(2)]
    stasis.stop()
    if statuses != ["MISS", "HIT"]:
        raise BenchError(f"recording the UI section's request gave {statuses}, not MISS then HIT")


def _row(
    label: str,
    s: Rounds,
    base: Rounds,
    cpu: _DaemonCpu,
    base_cpu: _DaemonCpu,
    watched: _Watched | None,
) -> list[str]:
    return [
        label,
        f"{s.rps:,.0f}",
        ms(s.p50_us),
        ms(s.p99_us),
        f"{ratio(s.rps, base.rps):.3f}",
        f"{cpu.us_per_hit:.0f}",
        f"{ratio(cpu.us_per_hit, base_cpu.us_per_hit):.3f}",
        "-" if watched is None else f"{watched.calls_per_second:.1f}",
        "-" if watched is None else f"{watched.cores:.2f}",
    ]


def run(ctx: Context) -> Section:
    entries = QUICK_ENTRIES if ctx.quick else ENTRIES
    db = ctx.scratch / "ui.db"
    body = chat_request("ui")
    body_file = ctx.file("ui.json", body)
    _recorded(ctx, db, body)
    started = time.monotonic()
    populate(db, template_row(db), entries - 1, entries)
    fill_seconds = time.monotonic() - started

    stasis = ctx.stasis("ui", db)
    url = stasis.url + PATH
    if post(url, body).cache_status != "HIT":
        raise BenchError("the recorded request is not a HIT after populating")
    stored = get_json(stasis.url + "/stats")["totalEntries"]
    if stored != entries:
        raise BenchError(f"the daemon holds {stored:,} entries, not {entries:,}")
    page = get_json(stasis.url + "/_stasis/api/entries?limit=50")
    if len(page.get("entries", [])) != 50:
        raise BenchError(f"the admin API's first page is not 50 entries: {page}")
    ctx.load(url, body_file, CONCURRENCY, seconds=ctx.warmup)

    seconds = ctx.duration / 2
    load = partial(ctx.load, url, body_file, CONCURRENCY, seconds=seconds)
    watchers = [_Watched("poller", ("--poller",))]
    if browser_available():
        watchers[:0] = [_Watched("browser", ("--browser",))]
    cpu = [_DaemonCpu(stasis.pid, load) for _ in range(1 + len(watchers))]
    before = get_json(stasis.url + "/stats")["hits"]
    measured = alternate(
        [
            cpu[0],
            *(partial(w.run, ctx, stasis.url, c) for w, c in zip(watchers, cpu[1:], strict=True)),
        ],
        rounds=ROUNDS,
    )
    counted = get_json(stasis.url + "/stats")["hits"] - before
    stasis.stop()

    base, *others = measured
    requests = sum(r.requests for r in measured)
    errors = sum(r.error_count for r in measured)
    labels = {
        "browser": "UI open (chromium)",
        "poller": "UI's calls (HTTP poller)",
    }
    section = Section(
        KEY,
        TITLE,
        header=[
            "",
            "hits/s",
            "p50 ms",
            "p99 ms",
            "/ nobody",
            "daemon µs/hit",
            "/ nobody",
            "API calls/s",
            "watcher cores",
        ],
        rows=[
            _row("nobody watching", base, base, cpu[0], cpu[0], None),
            *(
                _row(labels[w.mode], r, base, c, cpu[0], w)
                for w, r, c in zip(watchers, others, cpu[1:], strict=True)
            ),
        ],
        notes=[
            f"{entries:,} entries (filled in {fill_seconds:.1f} s); c={CONCURRENCY}; "
            f"{ROUNDS} alternating rounds per side (order flipping), medians, p99 the worst "
            f"round's; stasis counted {counted:,} hits for {requests:,} completed wrk requests; "
            f"{errors} wrk errors; "
            f"{sum(w.failed for w in watchers)} API calls of the watchers failed",
            "daemon µs/hit: the daemon's CPU over its side's runs (the UI's API calls it "
            "served included, its threads' queries too) per hit: the daemon's own cost, which "
            "other work on the machine moves far less than throughput",
            "watcher cores: the watcher's CPU (the browser's every process) over the run, "
            "taken from the two cores that wrk and the daemon share",
        ],
        data={
            "entries": entries,
            "fill_seconds": round(fill_seconds, 2),
            "hits_counted": counted,
            "runs": {
                "nobody": {**base.as_json(), "daemon_us_per_hit": round(cpu[0].us_per_hit, 1)},
                **{
                    w.mode: {
                        **r.as_json(),
                        "daemon_us_per_hit": round(c.us_per_hit, 1),
                        "watcher": w.as_json(),
                    }
                    for w, r, c in zip(watchers, others, cpu[1:], strict=True)
                },
            },
        },
    )
    if "browser" not in (w.mode for w in watchers):
        section.notes.append(
            "no browser: Playwright or /usr/bin/chromium is missing, the poller stands in"
        )
    first, ui = watchers[0], others[0]
    section.targets = [
        Target(
            "hit throughput c=16 with the UI open / without",
            ratio(ui.rps, base.rps),
            0.95,
            "x",
            at_most=False,
            note="chromium" if first.mode == "browser" else "HTTP poller (no browser)",
        )
    ]
    poller = others[-1]
    if first.mode != "poller":
        section.targets.append(
            Target(
                "hit throughput c=16 beside the UI's calls alone / without",
                ratio(poller.rps, base.rps),
                0.95,
                "x",
                at_most=False,
                note="HTTP poller: the daemon's side, no browser",
            )
        )
    section.targets.append(
        Target(
            "daemon CPU per hit beside the UI's calls / without",
            ratio(cpu[-1].us_per_hit, cpu[0].us_per_hit),
            1.05,
            "x",
            note="HTTP poller; the same cost as throughput, without the machine's noise",
        )
    )
    if counted < requests:
        section.notes.append("WARNING: fewer hits counted than requests: some were not HITs")
    if any(w.failed for w in watchers):
        section.notes.append("WARNING: some of the UI's API calls failed")
    return section
