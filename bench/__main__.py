"""
``python -m bench``: run the benchmark sections, print a table, save JSON.

This module only parses options, sets up the run (scratch directory, fake
upstream, wrk) and tears it down whatever happens; the measuring is in
``bench/sections``. A section that fails is reported and the others still run;
the exit status is then 1. No wrk means exit status 2 before anything starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import attrs

import twisted
from bench.context import Context
from bench.procs import REPO, start_upstream
from bench.report import Section, format_run
from bench.sections import ALL
from bench.wrk import find_wrk

__all__ = ["main"]


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark stasis on loopback with wrk."
    )
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, ~1 min")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10, quick 1)")
    parser.add_argument(
        "--only", help="comma-separated sections to run: " + ",".join(s.KEY for s in ALL)
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    options = parser.parse_args(argv)
    known = {s.KEY for s in ALL}
    chosen = set(options.only.split(",")) - {""} if options.only else known
    options.sections = [s for s in ALL if s.KEY in chosen]
    unknown = chosen - known
    if unknown:
        parser.error(f"unknown sections {','.join(sorted(unknown))}; choose from {sorted(known)}")
    if options.duration is None:
        options.duration = 1.0 if options.quick else 10.0
    return options


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except OSError:
        return ""
    return done.stdout.strip()


def _meta(wrk_version: str, options: argparse.Namespace) -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--", "stasis", "twisted"):
        commit += "+local changes"
    return {
        "wrk": wrk_version,
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "cpus": os.cpu_count(),
        "stasis_commit": commit,
        "duration_s": options.duration,
        "quick": options.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "load_average_start": os.getloadavg()[0],
    }


def _banner(meta: dict[str, Any]) -> str:
    where = f" (PYTHONPATH={meta['pythonpath']})" if meta["pythonpath"] else ""
    return (
        f"stasis benchmark: wrk {meta['wrk']}, Python {meta['python']}, Twisted "
        f"{meta['twisted']}, {meta['cpus']} CPUs, {meta['duration_s']:g} s per wrk run"
        f"{' (quick)' if meta['quick'] else ''}\nstasis {meta['stasis_commit']}{where}; "
        f"load average {meta['load_average_start']:.2f} at start, "
        f"{meta['load_average_end']:.2f} at end (other work on the machine skews results)"
    )


def _run_section(module: ModuleType, ctx: Context) -> Section:
    started = time.monotonic()
    print(f"[{module.KEY}] {module.TITLE} ...", file=sys.stderr, flush=True)
    try:
        with ExitStack() as stack:
            section: Section = module.run(attrs.evolve(ctx, stack=stack))
    except Exception as e:
        traceback.print_exc()
        section = Section(module.KEY, module.TITLE, notes=[f"FAILED: {e}"])
        section.data["error"] = str(e)
    print(f"[{module.KEY}] done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return section


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    found = find_wrk()
    if found is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    wrk, wrk_version = found
    signal.signal(signal.SIGTERM, _terminate)
    meta = _meta(wrk_version, options)
    started = time.monotonic()
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="stasis-bench-") as scratch, ExitStack() as stack:
        upstream = start_upstream(stack, Path(scratch))
        ctx = Context(stack, Path(scratch), wrk, upstream, options.duration, options.quick)
        for module in options.sections:
            sections.append(_run_section(module, ctx))
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["load_average_end"] = os.getloadavg()[0]

    text = format_run(_banner(meta), sections)
    print(text)
    result = {
        "meta": meta,
        "sections": {
            s.key: {
                "title": s.title,
                "header": s.header,
                "rows": s.rows,
                "notes": s.notes,
                "data": s.data,
            }
            for s in sections
        },
        "targets": [t.as_json() for s in sections for t in s.targets],
        "table": text,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {options.out} in {meta['elapsed_s']:.0f}s", file=sys.stderr)
    return 1 if any("error" in s.data for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
