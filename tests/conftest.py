"""Shared fixtures: a fake upstream and a real stasis daemon in front of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, start_daemon
from tests.fake_upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def start(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Daemon]]:
    """Start a daemon (``start(*options, via="twistd"|"stasis", upstream_url=...)``)."""
    daemons: list[Daemon] = []

    def _start(
        *args: str, via: str = "twistd", upstream_url: str | None = None, **kw: object
    ) -> Daemon:
        daemon = start_daemon(tmp_path, upstream_url or upstream.url, *args, via=via, **kw)  # type: ignore[arg-type]
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
