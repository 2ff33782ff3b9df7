"""
wrk, the load generator: finding it, running it, reading its one JSON line.

wrk keeps connections alive and is written in C, so on loopback it can drive
far more requests than twisted.web can answer; POST bodies come from
``lua/post.lua``, which also prints the results (percentiles included) as one
JSON line that is parsed here instead of scraping wrk's human output.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from attrs import frozen

from bench.procs import BenchError

__all__ = ["WrkResult", "find_wrk", "run_wrk"]

_SCRIPT = Path(__file__).resolve().parent / "lua" / "post.lua"
_VERSION = re.compile(r"wrk\s+(?:\S*/)?(\d+\.\d+\.\d+)")


@frozen
class WrkResult:
    """One wrk run. Latencies are wrk's, in microseconds."""

    connections: int
    requests: int
    seconds: float
    bytes: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_json(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "bytes": self.bytes,
            "p50_ms": self.p50_us / 1000,
            "p90_ms": self.p90_us / 1000,
            "p99_ms": self.p99_us / 1000,
            "mean_ms": round(self.mean_us / 1000, 4),
            "max_ms": self.max_us / 1000,
            "errors": self.errors,
        }


def find_wrk() -> tuple[str, str] | None:
    """wrk's path and version (``4.1.0``), or None when it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        return None
    # wrk has no --version: it prints its banner, then its usage, and exits 1.
    output = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    match = _VERSION.search(output.stdout + output.stderr)
    return path, match.group(1) if match else "unknown"


def run_wrk(
    wrk: str,
    url: str,
    body: Path,
    connections: int,
    seconds: float,
    unique: bool = False,
    nonce: str = "0",
    headers: tuple[str, ...] = (),
) -> WrkResult:
    """
    POST ``body`` to ``url`` for ``seconds`` over ``connections`` keep-alive connections.

    ``unique`` makes every request's body different (see ``lua/post.lua``).
    Threads: ``min(connections, 2)``, one per core of the machine this was written for.
    """
    argv = [
        wrk,
        "-c",
        str(connections),
        "-t",
        str(min(connections, 2)),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(_SCRIPT),
    ]
    for header in headers:
        argv += ["-H", header]
    argv += [url, "--", str(body), "unique" if unique else "same", nonce]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line.removeprefix("BENCHJSON "))
            return WrkResult(
                connections=connections,
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                bytes=data["bytes"],
                p50_us=data["p50_us"],
                p90_us=data["p90_us"],
                p99_us=data["p99_us"],
                mean_us=data["mean_us"],
                max_us=data["max_us"],
                errors=data["errors"],
            )
    raise BenchError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
