"""
End to end: what the client gets when things go wrong, and that the daemon survives it.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Callable

import openai
import pytest

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream, Received, Reply

CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


def post_chat(daemon: Daemon, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return daemon.request("POST", "/v1/chat/completions", CHAT.encode(), {**HEADERS, **headers})


def still_healthy(daemon: Daemon) -> None:
    assert daemon.get_json("/health")["status"] == "healthy"
    assert daemon.process.poll() is None


def test_unreachable_upstream_is_a_502_naming_it(
    start: Callable[..., Daemon], closed_port: int
) -> None:
    daemon = start(upstream_url=f"http://127.0.0.1:{closed_port}")
    status, headers, body = post_chat(daemon)
    assert status == 502
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "stasis_upstream_unreachable"
    assert f"127.0.0.1:{closed_port}" in error["message"]
    assert error["upstream"] == f"http://127.0.0.1:{closed_port}"
    # The upstream may be back by the next try: the SDKs' retries are welcome.
    assert "x-should-retry" not in headers
    still_healthy(daemon)


def test_the_openai_sdk_sees_the_502(start: Callable[..., Daemon], closed_port: int) -> None:
    daemon = start(upstream_url=f"http://127.0.0.1:{closed_port}")
    c = openai.OpenAI(base_url=daemon.url + "/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    assert "cannot reach the upstream" in caught.value.message


def test_a_silent_upstream_is_a_504(
    start: Callable[..., Daemon], upstream: FakeUpstream, stalled: threading.Event
) -> None:
    daemon = start("--upstream-timeout", "0.5")
    status, _, body = post_chat(daemon)
    assert status == 504
    error = json.loads(body)["error"]
    assert error["type"] == "stasis_upstream_timeout"
    assert "0.5s" in error["message"]
    stalled.set()
    still_healthy(daemon)
    assert daemon.get_json("/stats")["totalEntries"] == 0


def test_a_connection_dropped_before_the_answer_is_a_502(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    upstream.handler = lambda r: Reply(0, [], b"")
    status, _, body = post_chat(daemon)
    assert status == 502
    assert json.loads(body)["error"]["type"] == "stasis_upstream_unreachable"
    still_healthy(daemon)


def cut_short(received: Received) -> Reply:
    """A 200 whose body breaks off after 100 of its bytes."""
    return Reply(
        200,
        [("Content-Type", "application/json")],
        b'{"id": "x", "padding": "' + b"a" * 5000 + b'"}',
        truncate_after=100,
    )


def test_a_body_cut_by_the_upstream_is_not_stored(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.handler = cut_short
    # Held back until it was whole, the body broke off before a byte of it
    # was written: the client gets a 502 that says so, not a short answer.
    status, headers, body = post_chat(daemon)
    assert (status, headers["x-stasis-status"]) == (502, "MISS")
    assert json.loads(body)["error"]["type"] == "stasis_upstream_unreachable"
    assert "broke off" in json.loads(body)["error"]["message"]
    assert (
        headers["cache-status"]
        == "stasis; fwd=uri-miss; fwd-status=200; detail=upstream-body-broken"
    )
    assert "content-type" in headers and headers["content-type"] == "application/json"
    daemon.wait_for_log(r"POST /v1/chat/completions 502 MISS")
    upstream.handler = None
    status, headers, _ = post_chat(daemon)
    assert (status, headers["x-stasis-status"]) == (200, "MISS")
    assert len(upstream.calls()) == 2
    still_healthy(daemon)


def test_a_locked_database_does_not_hold_back_the_answer(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    """Another process holds the write lock: the miss is answered, and stored once it lets go."""
    locker = sqlite3.connect(daemon.db, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        status, headers, body = post_chat(daemon)
        assert (status, headers["x-stasis-status"]) == (200, "MISS")
        assert json.loads(body)["object"] == "chat.completion"
        assert locker.execute("SELECT COUNT(*) FROM entries").fetchone() == (0,)
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    poll_until(lambda: daemon.get_json("/stats")["totalEntries"] == 1)
    status, headers, _ = post_chat(daemon)
    assert (status, headers["x-stasis-status"]) == (200, "HIT")
    assert len(upstream.calls()) == 1
    still_healthy(daemon)


def test_redirects_are_returned_not_followed(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.handler = lambda r: Reply(
        307, [("Location", upstream.url + "/elsewhere"), ("Content-Type", "text/plain")], b"moved"
    )
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(CHAT), CHAT.encode())
        )
        response = _read_all(raw)
    assert response.startswith(b"HTTP/1.1 307 ")
    assert b"Location: " + upstream.url.encode() + b"/elsewhere" in response
    assert [c.path for c in upstream.calls()] == ["/v1/chat/completions"]


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _raw(daemon: Daemon, request: bytes) -> bytes:
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(request)
        return _read_all(raw)


def test_a_body_over_the_limit_is_a_413(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--max-body", "1000")
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]})
    status, _headers, body = daemon.request("POST", "/v1/chat/completions", big.encode(), HEADERS)
    assert status == 413
    assert json.loads(body)["error"]["type"] == "stasis_body_too_large"
    # Chunked bodies are counted as they arrive.
    response = _raw(
        daemon,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (200, b"y" * 200) for _ in range(10))
        + b"0\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b"stasis_body_too_large" in response
    assert upstream.calls() == []
    assert post_chat(daemon)[0] == 200
    still_healthy(daemon)


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    ],
)
def test_a_missing_or_duplicate_host_is_a_400(daemon: Daemon, request_head: bytes) -> None:
    response = _raw(daemon, request_head)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"stasis_bad_request" in response
    assert b"Host" in response


@pytest.mark.parametrize(
    ("header", "value"),
    [("X-Stasis-Mode", "sometimes"), ("X-Stasis-TTL", "soon"), ("X-Stasis-TTL", "-5")],
)
def test_bad_stasis_headers_are_400s(
    daemon: Daemon, upstream: FakeUpstream, header: str, value: str
) -> None:
    status, _headers, body = post_chat(daemon, **{header: value})
    assert status == 400
    error = json.loads(body)["error"]
    assert error["type"] == "stasis_bad_request"
    assert error["header"] == header
    assert upstream.calls() == []


def test_state_changing_calls_pass_through_and_are_never_stored(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    for _ in range(2):
        status, headers, _body = daemon.request("POST", "/v1/files", b'{"purpose": "x"}', HEADERS)
        assert (status, headers["x-stasis-status"]) == (200, "BYPASS")
        assert "x-stasis-key" not in headers
    status, headers, _ = daemon.request("GET", "/v1/models", None, HEADERS)
    assert (status, headers["x-stasis-status"]) == (200, "BYPASS")
    assert len(upstream.calls()) == 3
    assert daemon.get_json("/stats")["totalEntries"] == 0
    assert daemon.get_json("/stats")["bypasses"] == 3


def test_an_upstream_path_prefix_is_kept(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start(upstream_url=upstream.url + "/openai/")
    status, _headers, _ = daemon.request(
        "POST", "/v1/chat/completions?api-version=2024-10-21", CHAT.encode(), HEADERS
    )
    assert status == 200
    assert upstream.calls()[0].path == "/openai/v1/chat/completions?api-version=2024-10-21"
