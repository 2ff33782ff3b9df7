"""
(b) Misses: what a cache miss costs on top of calling the upstream directly.

Every request carries a unique counter in its JSON body (see ``lua/post.lua``)
so that each one is a real miss: a key derived, a lookup that finds nothing,
an upstream call, the answer relayed, compressed and committed. The same
script is run straight at the fake upstream; the difference is stasis's cost.
It is also run at a bare twisted.web + treq pass-through (``bench.proxyfloor``):
the least any proxy built on the design card's parts can cost, as the hit
section's floor is for hits.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from bench.client import get_json, post
from bench.context import Context
from bench.payloads import ID_MARK, chat_request
from bench.procs import BenchError, start_proxy_floor
from bench.report import Section, Target, ms, ratio
from bench.rounds import ROUNDS, Rounds, alternate
from bench.wrk import WrkResult

__all__ = ["KEY", "TITLE", "run"]

KEY = "b"
TITLE = "miss overhead: through stasis minus straight to the upstream"
CONCURRENCY = (1, 16)
PATH = "/v1/chat/completions"


def run(ctx: Context) -> Section:
    stasis = ctx.stasis("misses")
    template = chat_request(ID_MARK)
    body_file = ctx.file("miss.json", template)
    url = stasis.url + PATH
    direct = ctx.upstream.url + PATH
    probe = template.replace(ID_MARK.encode(), b"probe")
    statuses = [post(url, probe).cache_status, post(url, probe).cache_status]
    if statuses != ["MISS", "HIT"]:
        raise BenchError(f"a new request then its repeat gave {statuses}, not MISS then HIT")

    floor = start_proxy_floor(ctx.stack, ctx.scratch, ctx.upstream.url)
    through_floor = floor.url + PATH
    if post(through_floor, probe).status != 200:
        raise BenchError("the proxy floor does not answer 200")

    run_id = str(time.time_ns())
    for target in (url, through_floor, direct):
        ctx.load(target, body_file, 16, unique=True, nonce=f"{run_id}-warm", seconds=ctx.warmup)
    results: dict[int, tuple[Rounds, Rounds, Rounds]] = {}
    counted = 0
    seconds = ctx.duration / 2
    runs = itertools.count()

    def misses(target: str, c: int) -> Callable[[], WrkResult]:
        def load() -> WrkResult:
            # A nonce per run: no round may repeat the bodies of an earlier one.
            nonce = f"{run_id}-{next(runs)}"
            return ctx.load(target, body_file, c, unique=True, nonce=nonce, seconds=seconds)

        return load

    for c in CONCURRENCY:
        before = get_json(stasis.url + "/stats")["misses"]
        s, f, d = alternate([misses(url, c), misses(through_floor, c), misses(direct, c)])
        counted += get_json(stasis.url + "/stats")["misses"] - before
        results[c] = (s, f, d)
    stasis.stop()
    floor.stop()

    measured = sum(s.requests for s, _, _ in results.values())
    errors = sum(s.error_count + f.error_count + d.error_count for s, f, d in results.values())
    section = Section(
        KEY,
        TITLE,
        header=[
            "conc",
            "stasis/s",
            "p50 ms",
            "p99 ms",
            "direct/s",
            "p50 ms",
            "p99 ms",
            "+p50 ms",
            "+p99 ms",
            "thr ratio",
            "floor/s",
            "+p50 ms",
            "thr ratio",
        ],
        rows=[
            [
                str(c),
                f"{s.rps:,.0f}",
                ms(s.p50_us),
                ms(s.p99_us),
                f"{d.rps:,.0f}",
                ms(d.p50_us),
                ms(d.p99_us),
                ms(s.p50_us - d.p50_us),
                ms(s.p99_us - d.p99_us),
                f"{ratio(s.rps, d.rps):.2f}",
                f"{f.rps:,.0f}",
                ms(f.p50_us - d.p50_us),
                f"{ratio(f.rps, d.rps):.2f}",
            ]
            for c, (s, f, d) in results.items()
        ],
        notes=[
            f"stasis counted {counted:,} misses for {measured:,} completed wrk requests; "
            f"{errors} wrk errors; the fake upstream answers in-process, with no think time",
            "floor: a bare twisted.web + treq pass-through (no key, lookup, record or commit); "
            "its +p50 and thr ratio are against direct too",
            f"{ROUNDS} alternating rounds per side and concurrency; each figure is the median "
            "of the rounds, p99 the worst round's",
        ],
        data={
            "misses_counted": counted,
            "runs": {
                str(c): {"stasis": s.as_json(), "proxy_floor": f.as_json(), "direct": d.as_json()}
                for c, (s, f, d) in results.items()
            },
        },
    )
    s1, _, d1 = results[1]
    s16, _, d16 = results[16]
    section.targets = [
        Target("miss p50 overhead c=1", (s1.p50_us - d1.p50_us) / 1000, 1.0, "ms"),
        Target("miss throughput c=16 / direct", ratio(s16.rps, d16.rps), 0.3, "x", at_most=False),
    ]
    if counted < measured:
        section.notes.append("WARNING: fewer misses counted than requests: some were not misses")
    return section
