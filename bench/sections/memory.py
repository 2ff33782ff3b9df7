"""
(e) Memory: the daemon's resident set at idle, under hit load, and behind a stalled reader.

A proxy that buffers what a slow client has not read yet can be made to hold
a whole 50 MB answer per client; with back-pressure it holds a few socket
buffers. The stalled case runs before the hit load on a fresh daemon, so the
kernel's high-water mark (VmHWM) then still belongs to it.
"""

from __future__ import annotations

import time

from bench.client import post
from bench.context import Context
from bench.payloads import chat_request
from bench.procs import BenchError
from bench.report import Section, Target, ratio
from bench.rss import MIB, Sampler, memory, stall_stream
from bench.upstream import STREAM_BYTES_HEADER

__all__ = ["KEY", "TITLE", "run"]

KEY = "e"
TITLE = "memory: daemon RSS at idle, under hit load, behind a stalled 50 MB stream"
PATH = "/v1/chat/completions"
STREAM_BYTES = 50 * 1000 * 1000
READ_BYTES = 8192


def _mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def run(ctx: Context) -> Section:
    stasis = ctx.stasis("memory")
    url = stasis.url + PATH
    body = chat_request("memory")
    body_file = ctx.file("memory.json", body)
    if [post(url, body).cache_status for _ in range(2)] != ["MISS", "HIT"]:
        raise BenchError("the memory section's request did not become a HIT")
    time.sleep(0.5)
    idle = memory(stasis.pid)

    stall_seconds = 2.0 if ctx.quick else 5.0
    stream_body = chat_request(f"stall-{time.time_ns()}", stream=True)
    status, read, stall_peak = stall_stream(
        url,
        stream_body,
        {STREAM_BYTES_HEADER.decode(): str(STREAM_BYTES)},
        READ_BYTES,
        stall_seconds,
        stasis.pid,
    )
    time.sleep(0.3)
    after_stall = memory(stasis.pid)
    stall_hwm = after_stall["VmHWM"]

    with Sampler(stasis.pid) as sampler:
        load = ctx.load(url, body_file, 64)
    after_load = memory(stasis.pid)
    stasis.stop()

    limit = 2 * idle["VmRSS"] + 8 * MIB
    stall = max(stall_peak, stall_hwm)
    section = Section(
        KEY,
        TITLE,
        header=["moment", "VmRSS MiB", "VmHWM MiB", "/ idle"],
        rows=[
            ["idle (after one hit)", _mib(idle["VmRSS"]), _mib(idle["VmHWM"]), "1.00"],
            [
                f"stalled stream ({status}), {stall_seconds:.0f}s",
                _mib(stall_peak),
                _mib(stall_hwm),
                f"{ratio(stall, idle['VmRSS']):.2f}",
            ],
            [
                f"hit load c=64 ({load.rps:,.0f}/s)",
                _mib(sampler.peak),
                _mib(after_load["VmHWM"]),
                f"{ratio(max(sampler.peak, after_load['VmRSS']), idle['VmRSS']):.2f}",
            ],
        ],
        notes=[
            f"the stalled client read {read:,} B of a {STREAM_BYTES / 1e6:.0f} MB stream, "
            f"then stopped; target peak < 2 x idle + 8 MiB = {_mib(limit)} MiB",
        ],
        data={
            "idle": idle,
            "stall": {
                "status": status,
                "read_bytes": read,
                "seconds": stall_seconds,
                "peak_rss": stall_peak,
                "hwm": stall_hwm,
                "rss_after": after_stall["VmRSS"],
            },
            "hit_load": {"peak_rss": sampler.peak, **after_load, "wrk": load.as_json()},
            "limit_bytes": limit,
        },
    )
    section.targets = [
        Target(
            "RSS behind a stalled stream",
            stall / MIB,
            limit / MIB,
            "MiB",
            note=f"= 2 x idle {_mib(idle['VmRSS'])} + 8",
        ),
    ]
    return section
