"""
The store alone, without a daemon: put throughput and lookup latency.

``python -m bench.store_ops [--puts N] [--gets N] [--rounds N]``

Puts are issued the way the engine issues them, one per miss, with a given
number in flight (each finished put starts the next), so that concurrency
shows what group commit buys; lookups are sequential, each timed from the call
to its Deferred firing (the thread hop included). Every figure is the median
of the rounds, each on a fresh database. It runs against whichever store API
the checkout on the path has (``open_store`` now, ``SQLiteStore`` before it),
so ``PYTHONPATH=/path/to/old/checkout python -m bench.store_ops`` measures
the code a change started from.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import react

from bench.payloads import completion
from stasis.model import Entry, TokenUsage

CONCURRENCY = (1, 16)


def _store(path: Path, reactor: Any) -> Any:
    try:
        from stasis.store import open_store  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        from stasis.store import SQLiteStore  # type: ignore[attr-defined,unused-ignore]

        store = SQLiteStore(str(path), reactor)
    else:
        store = open_store(str(path), reactor)
    store.open()
    return store


def _entries(count: int, seed: int) -> list[Entry]:
    rng = random.Random(seed)
    headers = ((b"content-type", b"application/json"), (b"x-request-id", b"req_0123456789"))
    return [
        Entry(
            key=rng.randbytes(32).hex(),
            status=200,
            headers=headers,
            body=completion(n),
            created_at=1_700_000_000.0 + n,
            path="/v1/chat/completions",
            provider="openai",
            model="gpt-4o-mini",
            usage=TokenUsage(input=300, output=120, total=420),
        )
        for n in range(count)
    ]


async def _puts(store: Any, entries: list[Entry], concurrency: int) -> float:
    """Seconds to put every entry with ``concurrency`` puts in flight."""
    pending = iter(entries)

    async def worker() -> None:
        for entry in pending:
            await store.put(entry)

    started = time.perf_counter()
    await DeferredList(
        [ensureDeferred(worker()) for _ in range(concurrency)], fireOnOneErrback=True
    )
    return time.perf_counter() - started


async def _gets(store: Any, keys: list[str], count: int, seed: int) -> list[float]:
    """Each lookup's latency in microseconds."""
    rng = random.Random(seed)
    latencies = []
    for _ in range(count):
        key = rng.choice(keys)
        started = time.perf_counter()
        entry = await store.get(key)
        latencies.append((time.perf_counter() - started) * 1e6)
        assert entry is not None
    return latencies


async def _round(reactor: Any, puts: int, gets: int, seed: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    entries = _entries(puts, seed)
    with tempfile.TemporaryDirectory(prefix="stasis-store-ops-") as scratch:
        for concurrency in CONCURRENCY:
            path = Path(scratch) / f"c{concurrency}.db"
            store = _store(path, reactor)
            try:
                seconds = await _puts(store, entries, concurrency)
                figures[f"put c={concurrency} s"] = seconds
                if concurrency == CONCURRENCY[-1]:
                    latencies = sorted(await _gets(store, [e.key for e in entries], gets, seed))
                    figures["get p50 us"] = latencies[len(latencies) // 2]
                    figures["get p99 us"] = latencies[int(len(latencies) * 0.99)]
            finally:
                await store.close()
            figures[f"db bytes/entry c={concurrency}"] = (
                sum(
                    os.path.getsize(f"{path}{suffix}")
                    for suffix in ("", "-wal")
                    if os.path.exists(f"{path}{suffix}")
                )
                / puts
            )
    return figures


async def _main(reactor: Any, puts: int, gets: int, rounds: int) -> None:
    results = [await _round(reactor, puts, gets, seed) for seed in range(rounds)]
    for name in results[0]:
        values = [r[name] for r in results]
        median = statistics.median(values)
        shown = ", ".join(f"{v:.3f}" for v in values)
        extra = ""
        if name.startswith("put"):
            extra = f"  ({puts / median:,.0f} puts/s)"
        print(f"{name:24} median {median:10.3f}   rounds: {shown}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=10_000)
    parser.add_argument("--gets", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    def run(reactor: Any) -> Deferred[None]:
        return ensureDeferred(_main(reactor, options.puts, options.gets, options.rounds))

    react(run)


if __name__ == "__main__":
    main()
