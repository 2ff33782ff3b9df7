"""
End to end: two real daemons (``twistd -n stasis``) sharing one PostgreSQL database.

What one records, the other serves as a hit (one secret, so one key); what a
management command removes, both stop serving within a second; and neither
ever logs the password of the URL it was given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon, _environment, poll_until
from tests.fake_upstream import FakeUpstream
from tests.test_manage_postgres import the_password, with_password

pytest.importorskip("psycopg")

HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test-shared-pg"}
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


def call(daemon: Daemon) -> tuple[str, str]:
    status, headers, _ = daemon.request(
        "POST", "/v1/chat/completions", BODY.encode(), dict(HEADERS)
    )
    assert status == 200
    return headers["x-stasis-status"], headers.get("x-stasis-key", "")


def replayed(daemon: Daemon) -> int:
    """The status of the call in replay mode: a hit, or a 504 (neither fetches nor stores)."""
    status, _, _ = daemon.request(
        "POST", "/v1/chat/completions", BODY.encode(), {**HEADERS, "x-stasis-mode": "replay"}
    )
    return status


def test_two_daemons_share_one_database(
    start: Callable[..., Daemon],
    upstream: FakeUpstream,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    db: Any = with_password(postgres_url)
    first, second = start(db=db), start(db=db)
    assert call(first)[0] == "MISS"
    status, key = call(second)
    assert status == "HIT"  # the same secret, so the same key: stored by the first
    assert len(upstream.calls()) == 1
    assert call(first)[0] == "HIT"
    assert replayed(first) == replayed(second) == 200

    removed = subprocess.run(
        [sys.executable, "-m", "stasis", "rm", key, "-d", db],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        timeout=60,
    )
    assert removed.returncode == 0, removed.stderr
    gone = time.monotonic()
    for daemon in (first, second):
        poll_until(lambda daemon=daemon: replayed(daemon) == 504, 3.0)
    assert time.monotonic() - gone < 3.0  # the contract is a second; a busy machine, three
    assert len(upstream.calls()) == 1

    stats = first.get_json("/stats")
    assert stats["totalEntries"] == 0 and stats["dbSizeBytes"] > 0
    password = the_password(db)
    for daemon in (first, second):
        daemon.stop()
        assert password not in daemon.log
        assert db.replace(f":{password}@", "@") in daemon.log  # where its cache is, shown
