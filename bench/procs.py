"""
The processes a benchmark run starts, and the guarantee that none outlives it.

Each process gets its own session (process group) and a log file in the run's
scratch directory; it is ready when its log shows the line it prints once
listening (a deadline, never a sleep). Every process is registered with the
run's ``ExitStack`` as it starts, so an error or a Ctrl-C still stops it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from attrs import define

from bench.serve import LISTENING

__all__ = [
    "REPO",
    "BenchError",
    "Process",
    "spawn",
    "start_floor",
    "start_proxy_floor",
    "start_stasis",
    "start_upstream",
    "stasis_supports",
]

REPO = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE = 30.0
# stasis's own line, or twisted.web's (logged whatever --log-level says).
_STASIS_READY = re.compile(
    r"stasis listening on http://127\.0\.0\.1:(\d+)|StasisSite starting on (\d+)"
)
_HELPER_READY = re.compile(re.escape(LISTENING) + r"(\d+)")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


@define(eq=False)
class Process:
    """A started server: its URL, and a ``stop`` that is safe to call twice."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # A PYTHONPATH given to the harness comes first: a way to benchmark another checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    env.pop("STASIS_DB", None)
    env.pop("STASIS_UPSTREAM", None)
    return env


def spawn(
    stack: ExitStack, name: str, argv: list[str], scratch: Path, ready: re.Pattern[str]
) -> Process:
    """Start ``argv`` and wait until its log matches ``ready`` (group 1: the port)."""
    log = scratch / f"{name}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            cwd=scratch,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = Process(name, popen, log)
    stack.callback(process.stop)
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        match = ready.search(log.read_text(errors="replace"))
        if match:
            port = next(group for group in match.groups() if group)
            process.url = f"http://127.0.0.1:{port}"
            return process
        if popen.poll() is not None:
            break
        time.sleep(0.02)
    process.stop()
    raise BenchError(f"{name} did not start:\n{process.log_tail()}")


def start_upstream(stack: ExitStack, scratch: Path) -> Process:
    argv = [sys.executable, "-m", "bench.upstream"]
    return spawn(stack, "upstream", argv, scratch, _HELPER_READY)


def start_floor(stack: ExitStack, scratch: Path, body_bytes: int) -> Process:
    argv = [sys.executable, "-m", "bench.floor", "--body-bytes", str(body_bytes)]
    return spawn(stack, "floor", argv, scratch, _HELPER_READY)


def start_proxy_floor(stack: ExitStack, scratch: Path, upstream: str) -> Process:
    argv = [sys.executable, "-m", "bench.proxyfloor", "--upstream", upstream]
    return spawn(stack, "proxy-floor", argv, scratch, _HELPER_READY)


def _stasis() -> list[str]:
    """``stasis start``: the daemon as the README starts it (twistd's runner, fast log observer)."""
    return [str(Path(sys.executable).parent / "stasis"), "start"]


def stasis_supports(option: str) -> bool:
    """Whether this stasis has ``option`` (sections use newer options only when present)."""
    done = subprocess.run(
        [*_stasis(), "--help"], env=_environment(), capture_output=True, text=True, timeout=60
    )
    return option in done.stdout


def start_stasis(stack: ExitStack, scratch: Path, upstream: str, db: Path, *extra: str) -> Process:
    """
    ``stasis start`` as a user runs it, with default options unless ``extra``
    says otherwise (so at log level info: one log line per request).
    """
    argv = [
        *_stasis(),
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "-u",
        upstream,
        "-d",
        str(db),
        *extra,
    ]
    return spawn(stack, "stasis", argv, scratch, _STASIS_READY)
