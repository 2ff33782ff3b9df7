"""
(i) Keying one large request body: seconds and peak memory per body shape, against the code before.

Issue 15: a 60 MB JSON array of ``1`` took 62.5 s to key and grew the daemon
from 108 MB to 6.1 GB. Each shape (``bench/keying.py``) is built at 60 MB
(quick: 10 MB), written to a file, and keyed in a fresh process, as the daemon
keys it, by this checkout and by commit c957452's ``stasis/keys.py`` (read with
``git show``, loaded from a file: the same code, on the same stasis modules):
seconds, and the growth of the process's peak resident set over its resident
set just before keying (the body is read in one piece first), as a multiple
of the body's size. The old code runs each shape with a memory limit and a
time limit, so that the worst shapes end as "over the limit" rather than
take the machine.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.keying import SHAPES
from bench.procs import REPO
from bench.procs import _environment as environment
from bench.report import Section, Target

__all__ = ["KEY", "TITLE", "run"]

KEY = "i"
TITLE = "keying one large body: seconds and peak RSS growth per shape, vs c957452"
OLD_COMMIT = "c957452"
MB = 1000 * 1000
#: How long the old code may take for one shape, and how much memory.
OLD_SECONDS = 300
OLD_MEMORY_SHARE = 0.6  # of the memory available when the section starts
#: Targets: peak growth as a multiple of the body, and seconds for 60 MB.
GROWTH_LIMIT = 4.0
SECONDS_LIMIT_60MB = 15.0


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * 1024**3


def _old_keys(ctx: Context) -> Path | None:
    done = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:stasis/keys.py"],
        cwd=REPO,
        capture_output=True,
        timeout=30,
    )
    if done.returncode != 0:
        return None
    return ctx.file(f"keys-{OLD_COMMIT}.py", done.stdout)


def _measure(body: Path, keys: Path | None, limit_bytes: int | None, seconds: float) -> Any:
    """One keying in a fresh process: its JSON line, or why there is none."""

    def limited() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    argv = [sys.executable, "-m", "bench.keying", "measure", str(body)]
    if keys is not None:
        argv += ["--keys", str(keys)]
    try:
        done = subprocess.run(
            argv,
            cwd=body.parent,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=seconds,
            preexec_fn=limited,
        )
    except subprocess.TimeoutExpired:
        return f"over {seconds:.0f} s"
    if done.returncode != 0:
        if "MemoryError" in done.stderr:
            return f"over {limit_bytes / 1e9:.1f} GB" if limit_bytes else "out of memory"
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout)


def _cells(result: Any, size: int) -> list[str]:
    if isinstance(result, str):
        return [result, "", ""]
    return [result["form"], f"{result['seconds']:.2f}", f"{result['growth'] / size:.2f}"]


def _ratio(old: Any, new: Any, field: str, size: int) -> str:
    if isinstance(old, str) or isinstance(new, str):
        return ""
    if field == "growth" and new[field] < size / 100:
        return "new ~0"  # below 1% of the body: pages the kernel counts, not keying
    value = old[field] / new[field]
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def run(ctx: Context) -> Section:
    size = (10 if ctx.quick else 60) * MB
    old_keys = _old_keys(ctx)
    limit = int(_available() * OLD_MEMORY_SHARE)
    rows: list[list[str]] = []
    data: dict[str, Any] = {"size": size, "old_commit": OLD_COMMIT, "old_memory_limit": limit}
    worst_growth = 0.0
    worst_seconds = 0.0
    for shape in SHAPES:
        body = ctx.scratch / f"keying-{shape.replace(' ', '-')}.body"
        subprocess.run(
            [sys.executable, "-m", "bench.keying", "build", shape, str(size), str(body)],
            cwd=ctx.scratch,
            env=environment(),
            check=True,
            timeout=600,
        )
        actual = body.stat().st_size
        new = _measure(body, None, None, 600)
        old = _measure(body, old_keys, limit, OLD_SECONDS) if old_keys else "no git"
        body.unlink()
        if not isinstance(new, str):
            worst_growth = max(worst_growth, new["growth"] / actual)
            worst_seconds = max(worst_seconds, new["seconds"])
        rows.append(
            [
                shape,
                *_cells(new, actual),
                *_cells(old, actual),
                _ratio(old, new, "seconds", actual),
                _ratio(old, new, "growth", actual),
            ]
        )
        data[shape] = {"bytes": actual, "new": new, "old": old}
        print(f"[{KEY}] {shape}: new {new}, old {old}", file=sys.stderr, flush=True)
    seconds_limit = SECONDS_LIMIT_60MB * size / (60 * MB)
    section = Section(
        KEY,
        TITLE,
        header=[
            "shape",
            "keyed",
            "s",
            "peak / body",
            f"{OLD_COMMIT}",
            "s",
            "peak / body",
            "old/new s",
            "old/new peak",
        ],
        rows=rows,
        notes=[
            f"bodies of {size / MB:.0f} MB; peak: growth of the keying process's VmHWM over its "
            "VmRSS just before (the body read); old code limited to "
            f"{limit / 1e9:.1f} GB and {OLD_SECONDS} s a shape",
            "keyed raw: over the stream's budget (one ,:[{ per 12 bytes, beyond a million), "
            "or not JSON",
        ],
        data=data,
    )
    section.targets = [
        Target("keying peak RSS growth, worst shape", worst_growth, GROWTH_LIMIT, "x body"),
        Target(
            f"keying time for {size / MB:.0f} MB, worst shape",
            worst_seconds,
            seconds_limit,
            "s",
            note=f"{SECONDS_LIMIT_60MB:g} s for 60 MB, in proportion",
        ),
    ]
    return section
