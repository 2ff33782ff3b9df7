"""
A ``stasis start`` daemon for a script: any free port, a temporary database.

``--port 0`` lets the kernel pick a port nobody uses, and ``--ready-file``
is how the script learns which: stasis writes its URL there once it listens.
The script waits for that file against a deadline (and notices if stasis
exits instead), so it never guesses with a sleep.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DaemonStartError", "stasis_daemon"]

START_DEADLINE = 30.0


class DaemonStartError(Exception):
    """stasis did not come up; the message holds its log."""


@contextmanager
def stasis_daemon(workdir: Path, upstream: str) -> Iterator[str]:
    """Run ``stasis start`` in ``workdir`` against ``upstream``; yields its URL."""
    ready = workdir / "ready"
    log = workdir / "stasis.log"
    command = [
        sys.executable,
        "-m",
        "stasis",
        "start",
        "--port",
        "0",
        "--ready-file",
        str(ready),
        "--db",
        str(workdir / "cache.db"),
        "--upstream",
        upstream,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield _wait_ready(process, ready, log)
    finally:
        process.terminate()  # SIGTERM: stasis finishes what is in flight and closes the cache
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], ready: Path, log: Path) -> str:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if ready.exists() and (url := ready.read_text("utf-8").strip()):
            return url
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise DaemonStartError(f"stasis did not start:\n{log.read_text('utf-8', 'replace')}")
