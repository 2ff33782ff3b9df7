"""
(a) Hits: stasis serving one cached answer, against the twisted.web floor.

A hit is the path stasis exists for, and its cost beyond a bare twisted.web
resource is stasis's own work. Runs alternate between stasis and the floor
at each concurrency, in rounds whose order flips, and medians are compared
(``bench/rounds.py``), so that drift in the machine (thermal, noisy
neighbours) affects both sides alike.
"""

from __future__ import annotations

from functools import partial

from bench.client import get_json, post
from bench.context import Context
from bench.payloads import chat_request
from bench.procs import BenchError, start_floor
from bench.report import Section, Target, ms, ratio
from bench.rounds import ROUNDS, Rounds, alternate

__all__ = ["KEY", "TITLE", "run"]

KEY = "a"
TITLE = "hit throughput and latency, stasis vs a bare twisted.web floor"
CONCURRENCY = (1, 16, 64)
PATH = "/v1/chat/completions"


def _row(c: int, s: Rounds, f: Rounds) -> list[str]:
    return [
        str(c),
        f"{s.rps:,.0f}",
        ms(s.p50_us),
        ms(s.p99_us),
        f"{f.rps:,.0f}",
        ms(f.p50_us),
        ms(f.p99_us),
        f"{ratio(s.rps, f.rps):.2f}",
        f"{ratio(s.p50_us, f.p50_us):.2f}",
    ]


def run(ctx: Context) -> Section:
    stasis = ctx.stasis("hits")
    body = chat_request("hit")
    body_file = ctx.file("hit.json", body)
    url = stasis.url + PATH
    post(url, body)
    answer = post(url, body)
    if answer.cache_status != "HIT":
        raise BenchError(f"the pre-warmed request is {answer.cache_status}, not HIT")
    floor = start_floor(ctx.stack, ctx.scratch, len(answer.body))
    floor_answer = post(floor.url + PATH, body)
    if len(floor_answer.body) != len(answer.body):
        raise BenchError("the floor's body is not the size of stasis's answer")

    for target in (url, floor.url + PATH):
        ctx.load(target, body_file, 16, seconds=ctx.warmup)
    results: dict[int, tuple[Rounds, Rounds]] = {}
    counted = 0
    seconds = ctx.duration / 2
    for c in CONCURRENCY:
        before = get_json(stasis.url + "/stats")["hits"]
        s, f = alternate(
            [
                partial(ctx.load, url, body_file, c, seconds=seconds),
                partial(ctx.load, floor.url + PATH, body_file, c, seconds=seconds),
            ]
        )
        counted += get_json(stasis.url + "/stats")["hits"] - before
        results[c] = (s, f)
    stasis.stop()
    floor.stop()

    measured = sum(s.requests for s, _ in results.values())
    errors = sum(s.error_count + f.error_count for s, f in results.values())
    section = Section(
        KEY,
        TITLE,
        header=[
            "conc",
            "stasis/s",
            "p50 ms",
            "p99 ms",
            "floor/s",
            "p50 ms",
            "p99 ms",
            "thr ratio",
            "p50 ratio",
        ],
        rows=[_row(c, s, f) for c, (s, f) in results.items()],
        notes=[
            f"request {len(body)} B, answer {len(answer.body)} B; stasis counted {counted:,} "
            f"hits for {measured:,} completed wrk requests; {errors} wrk errors",
            f"{ROUNDS} alternating rounds per side and concurrency; each figure is the median "
            "of the rounds, p99 the worst round's",
        ],
        data={
            "request_bytes": len(body),
            "answer_bytes": len(answer.body),
            "hits_counted": counted,
            "runs": {
                str(c): {"stasis": s.as_json(), "floor": f.as_json()}
                for c, (s, f) in results.items()
            },
        },
    )
    s16, f16 = results[16]
    s1, f1 = results[1]
    section.targets = [
        # At the default log level, one line per request (the daemon as started).
        Target("hit throughput c=16 / floor", ratio(s16.rps, f16.rps), 0.9, "x", at_most=False),
        Target("hit p50 c=1 / floor p50", ratio(s1.p50_us, f1.p50_us), 1.3, "x"),
    ]
    if counted < measured:
        section.notes.append("WARNING: fewer hits counted than requests: some were not HITs")
    return section
