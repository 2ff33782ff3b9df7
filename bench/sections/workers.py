"""
(g) Workers: hit throughput at c=64 with ``--workers 2``, against one process.

Two daemons on databases holding the same pre-warmed answer, one with the
default single process, one with ``--workers 2``, measured in alternating
rounds whose order flips (``bench/rounds.py``). The issue's target is 1.6
times the single process's throughput on two cores.

On a two-core machine wrk itself takes a good part of a core, so each run
also records where the CPU went (``bench/cpu.py``): the cores each daemon
process kept busy, and wrk's own. The workers' split shows whether the
kernel spread the connections evenly, and stasis's ``/stats`` (which adds
up every worker) must count every request wrk completed as a hit.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from bench.client import get_json, post
from bench.context import Context
from bench.cpu import CpuUse, children, measure
from bench.payloads import chat_request
from bench.procs import BenchError, Process, stasis_supports
from bench.report import Section, Target, ms, ratio
from bench.rounds import ROUNDS, Rounds, alternate
from bench.wrk import WrkResult

__all__ = ["KEY", "TITLE", "run"]

KEY = "g"
TITLE = "hit throughput at c=64, --workers 2 vs one process"
CONNECTIONS = 64
WORKERS = 2
PATH = "/v1/chat/completions"


def _warm(daemon: Process, body: bytes, workers: int) -> None:
    """Store the answer, and make sure every worker has served it as a HIT once."""
    post(daemon.url + PATH, body)
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise BenchError(f"only workers {sorted(seen)} of {workers} answered")
        answer = post(daemon.url + PATH, body)
        if answer.cache_status != "HIT":
            raise BenchError(f"the pre-warmed request is {answer.cache_status}, not HIT")
        seen.add(get_json(daemon.url + "/health").get("worker", {}).get("index", 0))


def _measured(
    load: Callable[[], WrkResult], pids: list[int], uses: list[CpuUse]
) -> Callable[[], WrkResult]:
    def run() -> WrkResult:
        with measure(pids, time.monotonic) as use:
            result = load()
        uses.append(use)
        return result

    return run


def _cores(uses: list[CpuUse], pid: int) -> float:
    return statistics.median(use.cores(use.processes[pid]) for use in uses)


def _waited(uses: list[CpuUse], pid: int) -> float:
    return statistics.median(use.cores(use.waited[pid]) for use in uses)


def _wrk_cores(uses: list[CpuUse]) -> float:
    return statistics.median(use.cores(use.wrk) for use in uses)


def _other_cores(uses: list[CpuUse]) -> float:
    return statistics.median(use.cores(use.others) for use in uses)


def run(ctx: Context) -> Section:
    if not stasis_supports("--workers"):
        return Section(KEY, TITLE, notes=["n/a: this stasis has no --workers option"])
    body = chat_request("hit")
    body_file = ctx.file("workers-hit.json", body)
    one = ctx.stasis("workers-1")
    many = ctx.stasis("workers-2", None, "--workers", str(WORKERS))
    _warm(one, body, 1)
    _warm(many, body, WORKERS)
    workers = children(many.pid)
    if len(workers) != WORKERS:
        raise BenchError(f"the supervisor has {len(workers)} children, not {WORKERS}")
    for daemon in (one, many):
        ctx.load(daemon.url + PATH, body_file, CONNECTIONS, seconds=ctx.warmup)

    seconds = ctx.duration / 2
    one_uses: list[CpuUse] = []
    many_uses: list[CpuUse] = []
    before = [get_json(d.url + "/stats")["hits"] for d in (one, many)]
    single, multi = alternate(
        [
            _measured(
                lambda: ctx.load(one.url + PATH, body_file, CONNECTIONS, seconds=seconds),
                [one.pid],
                one_uses,
            ),
            _measured(
                lambda: ctx.load(many.url + PATH, body_file, CONNECTIONS, seconds=seconds),
                [many.pid, *workers],
                many_uses,
            ),
        ]
    )
    after = [get_json(d.url + "/stats")["hits"] for d in (one, many)]
    counted = [a - b for a, b in zip(after, before, strict=True)]
    one.stop()
    many.stop()
    return _section(single, multi, one.pid, many.pid, workers, one_uses, many_uses, counted)


def _section(
    single: Rounds,
    multi: Rounds,
    one_pid: int,
    supervisor: int,
    workers: list[int],
    one_uses: list[CpuUse],
    many_uses: list[CpuUse],
    counted: list[int],
) -> Section:
    speedup = ratio(multi.rps, single.rps)
    worker_cores = [_cores(many_uses, pid) for pid in workers]
    rows = [
        [
            "--workers 1",
            f"{single.rps:,.0f}",
            ms(single.p50_us),
            ms(single.p99_us),
            f"{_cores(one_uses, one_pid):.2f}",
            f"{_waited(one_uses, one_pid):.2f}",
            f"{_wrk_cores(one_uses):.2f}",
            f"{_other_cores(one_uses):.2f}",
            "1.00",
        ],
        [
            f"--workers {WORKERS}",
            f"{multi.rps:,.0f}",
            ms(multi.p50_us),
            ms(multi.p99_us),
            " + ".join(f"{c:.2f}" for c in worker_cores),
            " + ".join(f"{_waited(many_uses, pid):.2f}" for pid in workers),
            f"{_wrk_cores(many_uses):.2f}",
            f"{_other_cores(many_uses):.2f}",
            f"{speedup:.2f}",
        ],
    ]
    errors = single.error_count + multi.error_count
    section = Section(
        KEY,
        TITLE,
        header=[
            "daemon",
            "req/s",
            "p50 ms",
            "p99 ms",
            "stasis cores",
            "waiting",
            "wrk cores",
            "other cores",
            "ratio",
        ],
        rows=rows,
        notes=[
            f"c={CONNECTIONS}, {ROUNDS} alternating rounds per side (medians; p99 the worst "
            "round's); 'cores' = CPU seconds per wall second during the runs (medians), per "
            f"worker for --workers {WORKERS} (the supervisor used "
            f"{_cores(many_uses, supervisor):.2f}); 'other': the rest of the machine's busy "
            "time (kernel threads, and any other work: more than a few hundredths skews the "
            "ratio); 'waiting': the share of the time each daemon's reactor was runnable but "
            "waited for a core that other work held",
            f"/stats counted {counted[0]:,} and {counted[1]:,} hits for {single.requests:,} "
            f"and {multi.requests:,} completed wrk requests; {errors} wrk errors",
        ],
        data={
            "connections": CONNECTIONS,
            "workers": WORKERS,
            "single": single.as_json(),
            "multi": multi.as_json(),
            "ratio": speedup,
            "cores": {
                "single": [use.cores(use.processes[one_pid]) for use in one_uses],
                "workers": [[use.cores(use.processes[p]) for p in workers] for use in many_uses],
                "supervisor": [use.cores(use.processes[supervisor]) for use in many_uses],
                "wrk_single": [use.cores(use.wrk) for use in one_uses],
                "wrk_multi": [use.cores(use.wrk) for use in many_uses],
                "others_single": [use.cores(use.others) for use in one_uses],
                "others_multi": [use.cores(use.others) for use in many_uses],
                "waiting_single": [use.cores(use.waited[one_pid]) for use in one_uses],
                "waiting_workers": [
                    [use.cores(use.waited[p]) for p in workers] for use in many_uses
                ],
            },
            "hits_counted": counted,
        },
    )
    section.targets = [
        Target(
            f"hit throughput c={CONNECTIONS}, --workers {WORKERS} / one process",
            speedup,
            1.6,
            "x",
            at_most=False,
        )
    ]
    if counted[0] < single.requests or counted[1] < multi.requests:
        section.notes.append("WARNING: fewer hits counted than requests: some were not HITs")
    return section
