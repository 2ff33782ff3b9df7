"""
End to end: a UTF-8 ``X-Stasis-Namespace`` through a real daemon, read back from its SQLite file.

HTTP header values are bytes; clients send non-ASCII text in them as UTF-8,
which is what stasis's design says a namespace is. The raw bytes are sent with
``http.client`` so that no client library re-encodes them on the way.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
from urllib.parse import urlsplit

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

KEY = "sk-test-SECRET-0123456789abcdef"
BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
).encode()


def chat(daemon: Daemon, namespace: bytes) -> tuple[int, dict[str, str], bytes]:
    """POST a chat completion with ``namespace`` as the header's raw bytes."""
    where = urlsplit(daemon.url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        connection.putheader("Authorization", f"Bearer {KEY}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(BODY)))
        connection.putheader("X-Stasis-Namespace", namespace)
        connection.endheaders(BODY)
        response = connection.getresponse()
        return (
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def stored_namespaces(daemon: Daemon) -> list[str]:
    with sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT namespace FROM entries")]


def test_a_utf8_namespace_is_stored_as_the_text_sent(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    status, headers, _ = chat(daemon, "ünï".encode())
    assert (status, headers["x-stasis-status"]) == (200, "MISS")
    # Committed before the answer's last byte went out (the design's durability promise).
    assert stored_namespaces(daemon) == ["ünï"]
    status, headers, _ = chat(daemon, "ünï".encode())
    assert headers["x-stasis-status"] == "HIT"
    assert len(upstream.calls()) == 1


def test_a_namespace_that_is_not_utf8_is_a_400_naming_the_header(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    status, _, body = chat(daemon, "ünï".encode("latin-1"))
    assert status == 400
    error = json.loads(body)["error"]
    assert error["type"] == "stasis_bad_request"
    assert "X-Stasis-Namespace" in error["message"]
    assert upstream.calls() == []
    assert stored_namespaces(daemon) == []
