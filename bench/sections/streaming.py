"""
(c) Streams: time to the first event through stasis, and replaying a recorded stream.

A streamed answer is judged by its first event (the user sees tokens
appear) and, once recorded, by how fast a replay can be pushed out. Until
stasis records streams it answers them ``BYPASS``; the first figure is then
measured on that pass-through (the same relay a miss uses) and the replay is
reported as not applicable rather than failed.
"""

from __future__ import annotations

import statistics
import time

from bench.client import post
from bench.context import Context
from bench.payloads import chat_request
from bench.report import Section, Target, ratio
from bench.ttfb import measure_ttfb
from bench.upstream import STREAM_BYTES_HEADER
from bench.wrk import WrkResult

__all__ = ["KEY", "TITLE", "run"]

KEY = "c"
TITLE = "streaming: time to first event on a miss, replay speed on a hit"
PATH = "/v1/chat/completions"
#: Small enough that a TTFB sample is about the first event, not the transfer.
TTFB_STREAM_BYTES = 8192
REPLAY_STREAM_BYTES = 1 << 20
_NOT_CACHED = "n/a (streams not cached)"


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def _ttfb(ctx: Context, stasis_url: str) -> tuple[dict[str, float], str]:
    count = 60 if ctx.quick else 400
    tag = time.time_ns()
    header = {STREAM_BYTES_HEADER.decode(): str(TTFB_STREAM_BYTES)}
    times: dict[str, list[float]] = {"stasis": [], "direct": []}
    status = "-"
    # Alternating rounds, so both sides see the same machine.
    for round_ in range(4):
        for name, base in (("stasis", stasis_url), ("direct", ctx.upstream.url)):
            bodies = [
                chat_request(f"ttfb-{tag}-{name}-{round_}-{i}", stream=True)
                for i in range(count // 4 + 5)
            ]
            got, seen = measure_ttfb(base + PATH, bodies, header)
            times[name] += got[5:]  # the first few warm the connections
            if name == "stasis":
                status = seen
    figures = {
        f"{name}_{label}_ms": _p(values, q)
        for name, values in times.items()
        for label, q in (("p50", 50), ("p99", 99))
    }
    figures["samples"] = len(times["stasis"])
    return figures, status


def _events(body: bytes) -> int:
    return body.count(b"data: ")


def run(ctx: Context) -> Section:
    stasis = ctx.stasis("streams")
    url = stasis.url + PATH
    ttfb, status = _ttfb(ctx, stasis.url)
    overhead = ttfb["stasis_p50_ms"] - ttfb["direct_p50_ms"]
    cached = status != "BYPASS"
    section = Section(KEY, TITLE, header=["measure", "stasis", "direct", "difference"])
    section.rows.append(
        [
            f"first event p50 ms ({status})",
            f"{ttfb['stasis_p50_ms']:.3f}",
            f"{ttfb['direct_p50_ms']:.3f}",
            f"{overhead:+.3f}",
        ]
    )
    section.rows.append(
        [
            "first event p99 ms",
            f"{ttfb['stasis_p99_ms']:.3f}",
            f"{ttfb['direct_p99_ms']:.3f}",
            f"{ttfb['stasis_p99_ms'] - ttfb['direct_p99_ms']:+.3f}",
        ]
    )
    section.data["ttfb"] = {**ttfb, "stasis_status": status}
    section.notes.append(
        f"{ttfb['samples']:.0f} sequential {TTFB_STREAM_BYTES} B streams per side, each new"
    )
    note = "" if cached else "streams BYPASS: measured on pass-through"
    section.targets.append(
        Target("stream first-event p50 overhead", overhead, 2.0, "ms", note=note)
    )

    body = chat_request(f"replay-{time.time_ns()}", stream=True)
    body_file = ctx.file("replay.json", body)
    headers = {STREAM_BYTES_HEADER.decode(): str(REPLAY_STREAM_BYTES)}
    wrk_headers = (f"{STREAM_BYTES_HEADER.decode()}: {REPLAY_STREAM_BYTES}",)
    first = post(url, body, headers)
    second = post(url, body, headers)
    events = _events(second.body)
    direct = ctx.load(ctx.upstream.url + PATH, body_file, 1, headers=wrk_headers)
    replay: WrkResult | None = None
    if second.cache_status == "HIT":
        replay = ctx.load(url, body_file, 1, headers=wrk_headers)
    stasis.stop()

    def speed(r: WrkResult) -> list[str]:
        return [f"{r.bytes / r.seconds / 1e6:,.1f} MB/s", f"{r.requests * events / r.seconds:,.0f}"]

    direct_speed = speed(direct)
    if replay is None:
        detail = (
            _NOT_CACHED
            if second.cache_status == "BYPASS"
            else f"n/a (a repeat was {first.cache_status} then {second.cache_status})"
        )
        section.rows += [
            ["replay c=1 MB/s", detail, direct_speed[0], ""],
            ["replay c=1 events/s", detail, direct_speed[1], ""],
        ]
    else:
        replay_speed = speed(replay)
        section.rows += [
            [
                "replay c=1 MB/s (HIT)",
                replay_speed[0],
                direct_speed[0],
                f"{ratio(replay.bytes / replay.seconds, direct.bytes / direct.seconds):.2f} x",
            ],
            ["replay c=1 events/s", replay_speed[1], direct_speed[1], ""],
        ]
    section.notes.append(
        f"replayed stream: {len(second.body):,} B, {events:,} events; "
        f"'direct' is the fake upstream generating it"
    )
    section.data["replay"] = {
        "stream_bytes": len(second.body),
        "events": events,
        "statuses": [first.cache_status, second.cache_status],
        "stasis": None if replay is None else replay.as_json(),
        "direct": direct.as_json(),
    }
    return section
