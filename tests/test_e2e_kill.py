"""
``kill -9`` under a write load, twenty times over one database: after each
kill the file passes SQLite's ``integrity_check``, every answer the daemon
said it had stored (``Cache-Status: …; stored``) is in it, and the next daemon
opens it and answers those entries as HITs.

SQLite in WAL mode with ``synchronous=NORMAL`` makes a commit durable against
the process dying (not against the machine losing power): stasis says
``stored`` only after the commit returned, so nothing it said may be lost.
"""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream

KILLS = 20
CLIENTS = 6
#: Acknowledged entries to wait for before each kill (more keep arriving).
BEFORE_KILL = 15


def load(daemon: Daemon, round_: int, stored: list[tuple[str, str]], stop: threading.Event) -> None:
    """Distinct misses until the daemon dies; those it said it stored go to ``stored``."""
    address = urlsplit(daemon.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    n = 0
    while not stop.is_set():
        n += 1
        body = json.dumps(
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{round_}/{threading.get_ident()}/{n}"}],
            }
        )
        try:
            connection.request(
                "POST",
                "/v1/chat/completions",
                body,
                {"Authorization": "Bearer sk-kill", "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return  # the daemon is gone
        if response.status == 200 and "; stored" in response.headers.get("cache-status", ""):
            stored.append((response.headers["x-stasis-key"], body))


def test_kill_9_under_writes_loses_no_acknowledged_entry(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    acknowledged: list[tuple[str, str]] = []
    for round_ in range(KILLS):
        daemon = start()
        stored: list[tuple[str, str]] = []
        stop = threading.Event()
        clients = [
            threading.Thread(target=load, args=(daemon, round_, stored, stop))
            for _ in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        try:
            poll_until(lambda s=stored: len(s) >= BEFORE_KILL, deadline=30)  # type: ignore[misc]
        finally:
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait(10)
            stop.set()
            for client in clients:
                client.join(15)
        acknowledged += stored

        with sqlite3.connect(daemon.db) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            present = {row[0].hex() for row in db.execute("SELECT key FROM entries")}
        missing = [key for key, _ in acknowledged if key not in present]
        assert missing == [], f"round {round_}: {len(missing)} acknowledged entries lost"
        db.close()

    # The next daemon answers what the killed ones acknowledged as HITs.
    daemon = start()
    for key, body in acknowledged[:: len(acknowledged) // 10]:
        status, headers, _ = daemon.request(
            "POST",
            "/v1/chat/completions",
            body.encode(),
            {"Authorization": "Bearer sk-kill", "Content-Type": "application/json"},
        )
        assert (status, headers["x-stasis-status"], headers["x-stasis-key"]) == (200, "HIT", key)
    assert daemon.get_json("/stats")["totalEntries"] >= len(acknowledged)
    assert len(acknowledged) >= KILLS * BEFORE_KILL
