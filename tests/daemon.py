"""
A real ``twistd -n stasis`` (or ``stasis start``) process on a real socket, for end-to-end tests.

The daemon listens on an ephemeral port (``--listen tcp:0``); the harness
learns which by reading the daemon's own "listening on" log line, with a
deadline instead of a sleep. Everything the daemon logs is kept, so a test can
search it (for a leaked credential, say).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Daemon", "poll_until", "start_daemon"]

# stasis's own line, or twisted.web's (logged whatever --log-level says).
_LISTENING = re.compile(
    r"stasis listening on (https?)://[0-9.]+:(\d+)|StasisSite starting on (\d+)"
)
STARTUP_DEADLINE = 20.0


def poll_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds; fail at the deadline."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline}s")
        time.sleep(0.005)


class Daemon:
    def __init__(self, process: subprocess.Popen[str], db: Path) -> None:
        self.process = process
        self.db = db
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        self.announced = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match and not self.url:
                scheme, port, web_port = match.groups()
                self.url = f"{scheme or 'http'}://127.0.0.1:{port or web_port}"
                #: stasis's own line comes once the database is open as well.
                self.announced = scheme is not None
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> Daemon:
        if not self._ready.wait(STARTUP_DEADLINE) or not self.url:
            self.stop()
            raise RuntimeError("stasis did not start:\n" + self.log)
        # The port is bound before the database is opened, and twisted.web's
        # line (all there is below --log-level info) comes as it is bound: the
        # daemon is ready once it answers (the kernel holds the connection
        # until then).
        if self.announced:
            return self
        try:
            self.request("GET", "/health")
        except OSError as e:
            self.stop()
            raise RuntimeError(f"stasis did not start ({e}):\n" + self.log) from None
        return self

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, pattern: str, deadline: float = 5.0) -> str:
        """The first log line matching ``pattern``, polling until ``deadline`` seconds pass."""
        end = time.monotonic() + deadline
        regex = re.compile(pattern)
        while time.monotonic() < end:
            for line in list(self.lines):
                if regex.search(line):
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no log line matching {pattern!r} in:\n{self.log}")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """A raw HTTP call; error statuses are returned, not raised."""
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return (
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read(),
                )
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode


#: Variables that point botocore's credential chain somewhere, besides ``AWS_*``.
_AWS_LOOKALIKES = ("BOTO_CONFIG",)


def _environment(
    extra: Mapping[str, str] | None = None, home: Path | None = None
) -> dict[str, str]:
    """
    The daemon's environment: this process's, without stasis's own variables.

    With ``extra`` (even empty) the daemon gets no AWS configuration from this
    machine: every ``AWS_*`` variable is dropped, the shared config and
    credentials files point at files that do not exist (under ``home``), and
    the instance metadata service is off, so botocore's credential chain finds
    exactly what ``extra`` gives it and never tries the network.
    """
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("STASIS_DB", None)
    env.pop("STASIS_UPSTREAM", None)
    env.pop("STASIS_ADMIN_TOKEN", None)
    if extra is not None:
        for name in list(env):
            if name.startswith("AWS_") or name in _AWS_LOOKALIKES:
                del env[name]
        nowhere = home or Path("/nonexistent")
        env["AWS_CONFIG_FILE"] = str(nowhere / "no-aws-config")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(nowhere / "no-aws-credentials")
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        env.update(extra)
    return env


def command(via: str) -> list[str]:
    """How to run the daemon: through twistd's plugin, or the ``stasis start`` script."""
    bindir = Path(sys.executable).parent
    if via == "twistd":
        return [str(bindir / "twistd"), "-n", "--pidfile=", "stasis"]
    return [str(bindir / "stasis"), "start"]


def run(
    args: list[str], cwd: Path, via: str = "twistd", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the daemon's command line to completion (for option errors and --help)."""
    return subprocess.run(
        command(via) + args,
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_daemon(
    tmp_path: Path,
    upstream: str | None,
    *args: str,
    via: str = "twistd",
    db: Path | None = None,
    routes: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    """
    Start a daemon and wait until it listens.

    ``upstream``: the bare ``-u URL`` for everything, or None for none.
    ``routes``: ``-u NAME=URL`` per provider. ``env``: see :func:`_environment`
    (given, the daemon sees no AWS configuration but what it holds).
    """
    db = db or tmp_path / "stasis-cache.db"
    upstreams: list[str] = []
    if upstream is not None:
        upstreams += ["-u", upstream]
    for name, url in (routes or {}).items():
        upstreams += ["-u", f"{name}={url}"]
    process = subprocess.Popen(
        [
            *command(via),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            *upstreams,
            "-d",
            str(db),
            *args,
        ],
        cwd=tmp_path,
        env=_environment(env, home=tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Daemon(process, db).wait_ready()
