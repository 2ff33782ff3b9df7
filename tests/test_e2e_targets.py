"""
End to end, on raw sockets: request lines and headers that try to point the
daemon at another host (a canary listener counts every connection it gets),
targets with fragments, and header values too large for their numbers. Each
is a 4xx JSON error, never a connection elsewhere, a 500 or a traceback (the
``start`` fixture fails a test whose daemon logged one).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream, Reply
from tests.test_e2e_errors import _raw

CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


class Canary:
    """A listener that only counts the connections it is sent."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    listener = Canary()
    try:
        yield listener
    finally:
        listener.close()


def post(target: str, *headers: str, body: str = CHAT) -> bytes:
    head = "".join(f"{header}\r\n" for header in headers)
    return (
        f"POST {target} HTTP/1.1\r\nHost: stasis\r\nAuthorization: Bearer sk-canary-key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{head}"
        f"Connection: close\r\n\r\n{body}"
    ).encode()


def status_and_error(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["message"] if body.startswith(b"{") else ""


def test_request_lines_that_name_another_host_reach_no_other_host(
    start: Callable[..., Daemon], canary: Canary
) -> None:
    # Upstreams a target could extend into the canary's address if it were appended.
    head, tail = str(canary.port)[:-1], str(canary.port)[-1]
    for upstream, targets in {
        "http://127.0.0.1": [
            f":{canary.port}/v1/chat/completions",
            f"@127.0.0.1:{canary.port}/v1/chat/completions",
        ],
        "http://127.0.0": [f".1:{canary.port}/v1/chat/completions"],
        # A port that a leading digit lengthens into the canary's.
        f"http://127.0.0.1:{head}": [f"{tail}/v1/chat/completions"],
    }.items():
        daemon = start(upstream_url=upstream)
        for target in [
            *targets,
            f"http://127.0.0.1:{canary.port}/v1/chat/completions",
            f"http://[::1]:{canary.port}/v1/chat/completions",
            f"http://2130706433:{canary.port}/v1/chat/completions",
        ]:
            status, message = status_and_error(_raw(daemon, post(target)))
            assert status == 400, target
            assert "reverse proxy" in message
        connect = (
            f"CONNECT 127.0.0.1:{canary.port} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status_and_error(_raw(daemon, connect.encode()))[0] == 400
    assert canary.connections == 0


def test_a_host_header_does_not_choose_the_upstream(
    daemon: Daemon, upstream: FakeUpstream, canary: Canary
) -> None:
    request = post("/v1/chat/completions").replace(
        b"Host: stasis", f"Host: 127.0.0.1:{canary.port}".encode()
    )
    assert _raw(daemon, request).startswith(b"HTTP/1.1 200 ")
    assert canary.connections == 0
    assert [call.path for call in upstream.calls()] == ["/v1/chat/completions"]


def test_paths_that_look_like_another_authority_stay_paths_on_the_upstream(
    daemon: Daemon, upstream: FakeUpstream, canary: Canary
) -> None:
    # Network-path references and their encoded and backslashed spellings: a
    # URL built by resolving the target against the upstream would leave it.
    for target in [
        f"//127.0.0.1:{canary.port}/v1/chat/completions",
        f"/%2F127.0.0.1:{canary.port}/v1/chat/completions",
        f"/\\127.0.0.1:{canary.port}/v1/chat/completions",
        f"/%5C%5C127.0.0.1:{canary.port}/v1/chat/completions",
        f"/@127.0.0.1:{canary.port}/v1/chat/completions",
    ]:
        response = _raw(daemon, post(target))
        assert int(response.split(b" ", 2)[1]) < 500, target
    assert canary.connections == 0
    # Each reached the configured upstream, as a path.
    assert len(upstream.calls()) == 5
    assert all(call.path.startswith("/") for call in upstream.calls())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_an_upstream_redirect_to_another_host_is_returned_never_followed(
    daemon: Daemon, upstream: FakeUpstream, canary: Canary, status: int
) -> None:
    location = f"http://127.0.0.1:{canary.port}/v1/chat/completions"
    upstream.handler = lambda received: Reply(
        status, [("Location", location), ("Content-Type", "text/plain")], b"moved"
    )
    response = _raw(daemon, post("/v1/chat/completions"))
    assert response.startswith(b"HTTP/1.1 %d " % status)
    assert b"Location: " + location.encode() in response
    assert canary.connections == 0
    assert len(upstream.calls()) == 1


@pytest.mark.parametrize(
    "target",
    [
        "/v1/files#/chat/completions",
        "/v1/chat/completions#x",
        "/v1/chat/completions/../../files",
        "/v1/chat/completions/%2e%2e/%2e%2e/files",
        "/_stasis/with/mode=cache/../v1/files",
    ],
)
def test_a_fragment_or_a_dot_segment_is_a_400_and_nothing_is_forwarded(
    daemon: Daemon, upstream: FakeUpstream, target: str
) -> None:
    for _ in range(2):
        status, _ = status_and_error(_raw(daemon, post(target)))
        assert status == 400
    assert upstream.calls() == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        # A target that is not ASCII.
        post("/v1/chat/completions").replace(
            b"/v1/chat/completions", "/v1/chat/complétions".encode(), 1
        ),
        # A header line without a colon.
        post("/v1/chat/completions").replace(b"Connection: close", b"Connection close"),
        # A chunk size that is not hexadecimal.
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        # Two different lengths.
        post("/v1/chat/completions", "Content-Length: 3"),
    ],
    ids=["non-ascii-target", "header-without-colon", "bad-chunk-size", "two-lengths"],
)
def test_a_request_twisted_cannot_parse_is_a_json_400_that_says_what_is_wrong(
    daemon: Daemon, upstream: FakeUpstream, request_bytes: bytes
) -> None:
    status, message = status_and_error(_raw(daemon, request_bytes))
    assert status == 400
    assert "not valid HTTP/1.1" in message and "percent-encode" in message
    assert upstream.calls() == []


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Stasis-TTL", "9" * 5000),
        ("X-Stasis-TTL", "9" * 401),
        ("X-Stasis-TTL", str(2**31 + 1)),
        ("X-Stasis-Samples", "9" * 5000),
        ("X-Stasis-Mode", "x" * 5000),
    ],
)
def test_a_directive_out_of_range_is_a_400_that_says_so_briefly(
    daemon: Daemon, upstream: FakeUpstream, header: str, value: str
) -> None:
    status, message = status_and_error(
        _raw(daemon, post("/v1/chat/completions", f"{header}: {value}"))
    )
    assert status == 400
    assert header in message and len(message) < 300
    assert upstream.calls() == []


def test_freshness_arguments_too_large_to_represent_count_as_two_to_the_31(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    for _ in range(2):
        response = _raw(
            daemon,
            post(
                "/v1/chat/completions",
                f"Cache-Control: max-age={'9' * 5000}, min-fresh={'9' * 5000}",
            ),
        )
        assert response.startswith(b"HTTP/1.1 200 ")
    # Any age will do, and an entry kept for ever is fresh for ever: one call.
    assert len(upstream.calls()) == 1
    other = CHAT.replace("hi", "hello")
    longest = _raw(daemon, post("/v1/chat/completions", f"X-Stasis-TTL: {2**31}", body=other))
    assert longest.startswith(b"HTTP/1.1 200 ") and b"stored" in longest


def test_a_body_over_the_limit_with_expect_100_continue_gets_no_100(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--max-body", "1000")
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer
    assert upstream.calls() == []
