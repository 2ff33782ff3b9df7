"""
The session's daemon: ``python -m stasis start`` as a child process.

A subprocess rather than a service in the test process, because the test
process must not import Twisted (pytest loads the plugin for every session),
must not share a reactor with tests that run their own (pytest-twisted), and
under pytest-xdist is not one process. The daemon picks a free port
(``--port 0``) and says which in its ready file; it is waited for by polling
that file against a deadline, watching for an early exit meanwhile.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import define

from stasis.testing._errors import DaemonStartError

__all__ = ["START_DEADLINE", "STOP_DEADLINE", "Daemon", "start_daemon"]

#: Seconds the daemon may take to listen (it usually takes well under one).
START_DEADLINE = 30.0
#: Seconds it may take to stop after SIGTERM before it is killed.
STOP_DEADLINE = 15.0
#: Lines of its log an error quotes.
LOG_TAIL_LINES = 30


@define
class Daemon:
    process: subprocess.Popen[bytes]
    #: Its address, as its ready file gave it: ``http://127.0.0.1:PORT``.
    url: str
    #: Everything it wrote (stdout and stderr).
    log: Path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log, lines)

    def stop(self, deadline: float = STOP_DEADLINE) -> int:
        """SIGTERM, then SIGKILL if it has not exited by ``deadline``; its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def command(
    db: str, mode: str, upstreams: Sequence[str], ready_file: Path, python: str = sys.executable
) -> list[str]:
    """The daemon's command line: any free port, the shared credential scope."""
    args = [python, "-m", "stasis", "start", "--port", "0", "--ready-file", str(ready_file)]
    args += ["--db", db, "--mode", mode, "--credential-scope", "shared"]
    for upstream in upstreams:
        args += ["--upstream", upstream]
    return args


def start_daemon(
    workdir: Path,
    db: str,
    mode: str,
    upstreams: Sequence[str],
    env: Mapping[str, str],
    deadline: float = START_DEADLINE,
) -> Daemon:
    """
    Start the daemon in ``workdir`` (its log and ready file go there) and wait
    until it listens; :class:`DaemonStartError`, with its log, if it does not.
    """
    ready = workdir / "ready"
    log = workdir / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command(db, mode, upstreams, ready),
            cwd=workdir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(process=process, url="", log=log)
    try:
        daemon.url = _wait_ready(process, ready, log, deadline)
    except BaseException:  # a deadline, or Ctrl-C while waiting: never leave it running
        daemon.stop()
        raise
    return daemon


def _wait_ready(process: subprocess.Popen[bytes], ready: Path, log: Path, deadline: float) -> str:
    end = time.monotonic() + deadline
    while True:
        with contextlib.suppress(FileNotFoundError):
            url = ready.read_text("utf-8").strip()
            if url:
                return url
        status = process.poll()
        if status is not None:
            raise DaemonStartError(
                f"the stasis daemon exited at start (status {status}):\n"
                f"{_tail(log, LOG_TAIL_LINES)}"
            )
        if time.monotonic() > end:
            raise DaemonStartError(
                f"the stasis daemon did not listen within {deadline:g}s:\n"
                f"{_tail(log, LOG_TAIL_LINES)}"
            )
        time.sleep(0.01)
