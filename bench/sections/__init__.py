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
    memory,
    misses,
    shared,
    slowclients,
    streaming,
    workers,
)

__all__ = ["ALL"]

ALL = (hits, misses, streaming, growth, memory, eviction, workers, shared, slowclients)
