"""
The benchmark's sections, one module each, in the order they run.

Each module has ``KEY``, ``TITLE`` and ``run(ctx) -> Section``; ``--only``
selects by key.
"""

from __future__ import annotations

from bench.sections import (
    eviction,
    growth,
    hits,
    hold,
    keying,
    memory,
    misses,
    shared,
    slowclients,
    soak,
    streaming,
    ui,
    workers,
)

__all__ = ["ALL"]

ALL = (
    hits,
    misses,
    streaming,
    growth,
    memory,
    eviction,
    workers,
    shared,
    keying,
    hold,
    slowclients,
    soak,
    ui,
)
