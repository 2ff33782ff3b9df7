"""Shared fixtures: a fake upstream and a real stasis daemon in front of it."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, start_daemon
from tests.fake_upstream import FakeUpstream

# PostgreSQL servers and databases for the tests that need one (skipped without).
from tests.postgres_support import own_cluster, postgres_server, postgres_url  # noqa: F401

# A shell starts a background job with SIGINT ignored, and every process it
# starts inherits that: a daemon or command under test would then shrug off
# the Ctrl-C a test sends. A handler (unlike "ignored") is reset to the default
# in each child, so the processes the tests start see Ctrl-C as a user's would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def make_upstream() -> Iterator[Callable[..., FakeUpstream]]:
    """More fake upstreams, each on its own port (``make_upstream(**fields)``), stopped after."""
    fakes: list[FakeUpstream] = []

    def _make(**fields: object) -> FakeUpstream:
        fake = FakeUpstream(**fields).start()  # type: ignore[arg-type]
        fakes.append(fake)
        return fake

    try:
        yield _make
    finally:
        for fake in fakes:
            fake.stop()


@pytest.fixture
def stalled(upstream: FakeUpstream) -> Iterator[threading.Event]:
    """The upstream answers only once the event is set; set when the test ends."""
    release = threading.Event()
    upstream.hold_until(release)
    try:
        yield release
    finally:
        release.set()


@pytest.fixture
def start(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Daemon]]:
    """
    Start a daemon: ``start(*options, via="twistd"|"stasis", upstream_url=..., bare=True,
    routes={name: url}, env={...}, db=path)``.

    By default every request goes to the ``upstream`` fixture (a bare ``-u URL``);
    ``bare=False`` gives no bare ``-u``, only the ``routes`` (``-u NAME=URL``).
    ``env`` (even ``{}``) isolates the daemon from this machine's AWS configuration
    and adds these variables (see :func:`tests.daemon.start_daemon`).
    """
    daemons: list[Daemon] = []

    def _start(
        *args: str,
        via: str = "twistd",
        upstream_url: str | None = None,
        bare: bool = True,
        **kw: object,
    ) -> Daemon:
        url = (upstream_url or upstream.url) if bare else None
        daemon = start_daemon(tmp_path, url, *args, via=via, **kw)  # type: ignore[arg-type]
        daemons.append(daemon)
        return daemon

    try:
        yield _start
    finally:
        for daemon in daemons:
            daemon.stop()
    # Whatever a test did, the daemon must never have logged a traceback.
    for daemon in daemons:
        assert "Traceback" not in daemon.log, daemon.log
        assert "Unhandled error" not in daemon.log, daemon.log


@pytest.fixture
def daemon(start: Callable[..., Daemon]) -> Daemon:
    return start()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
