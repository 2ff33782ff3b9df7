"""
The state one benchmark run shares between sections.

A run has one scratch directory (databases, bodies, process logs; removed at
the end), one fake upstream, wrk, and the durations chosen on the command
line. Each section starts its own stasis daemon on its own database, so
sections can run alone (``--only``) and none inherits another's cache.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from attrs import define

from bench.procs import Process, start_stasis
from bench.wrk import WrkResult, run_wrk

__all__ = ["Context"]


@define
class Context:
    stack: ExitStack
    scratch: Path
    wrk: str
    upstream: Process
    duration: float
    quick: bool

    @property
    def warmup(self) -> float:
        return 1.0 if self.quick else 2.0

    def file(self, name: str, data: bytes) -> Path:
        path = self.scratch / name
        path.write_bytes(data)
        return path

    def stasis(self, name: str, db: Path | None = None, *extra: str) -> Process:
        """A daemon in front of the fake upstream, on ``db`` (default: a new file)."""
        return start_stasis(
            self.stack, self.scratch, self.upstream.url, db or self.scratch / f"{name}.db", *extra
        )

    def load(
        self,
        url: str,
        body: Path,
        connections: int,
        unique: bool = False,
        nonce: str = "0",
        headers: tuple[str, ...] = (),
        seconds: float | None = None,
    ) -> WrkResult:
        return run_wrk(
            self.wrk,
            url,
            body,
            connections,
            self.duration if seconds is None else seconds,
            unique=unique,
            nonce=nonce,
            headers=headers,
        )
