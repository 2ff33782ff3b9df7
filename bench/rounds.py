"""
Several wrk runs of each target, taken in turns, summarised by their medians.

Loopback figures on a small shared machine drift by more than a tenth from one
ten-second run to the next, more than some of the ratios the targets ask for.
Running each side several times, alternating which goes first, and comparing
medians keeps that drift out of the ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen

from bench.wrk import WrkResult

__all__ = ["ROUNDS", "Rounds", "alternate"]

#: Rounds per target; each run lasts half the section's wrk duration.
ROUNDS = 3


@frozen
class Rounds:
    """One target's runs: median throughput and p50, the worst p99."""

    results: tuple[WrkResult, ...]

    @property
    def rps(self) -> float:
        return statistics.median(result.rps for result in self.results)

    @property
    def p50_us(self) -> float:
        return statistics.median(result.p50_us for result in self.results)

    @property
    def p99_us(self) -> float:
        return max(result.p99_us for result in self.results)

    @property
    def requests(self) -> int:
        return sum(result.requests for result in self.results)

    @property
    def error_count(self) -> int:
        return sum(result.error_count for result in self.results)

    def as_json(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_us / 1000,
            "p99_ms": self.p99_us / 1000,
            "rounds": [result.as_json() for result in self.results],
        }


def alternate(runs: Sequence[Callable[[], WrkResult]], rounds: int = ROUNDS) -> list[Rounds]:
    """Call each run ``rounds`` times in turns, the order reversed each round."""
    results: list[list[WrkResult]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for _ in range(rounds):
        for i in order:
            results[i].append(runs[i]())
        order.reverse()  # no side is always the one measured first
    return [Rounds(tuple(measured)) for measured in results]
