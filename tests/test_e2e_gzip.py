"""
End to end: gzip-encoded answers from the upstream, decoded no faster than
the client takes them.

A gzip bomb (a gigabyte of answer in a megabyte on the wire) is served to
clients that read a few kilobytes and stop: the daemon must hold a slice of
decoded body and its socket buffers per client, not what one chunk of the
bomb inflates to. Ordinary gzip answers, plain and streamed, still arrive
decoded and are stored; a gzip body that does not decode is a broken answer.
"""

from __future__ import annotations

import gzip
import json
import socket
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream, Reply, sse_data, stream_reply

MIB = 1 << 20
#: Clients that stop reading a gzip bomb.
CLIENTS = 8
#: What each of them reads before it stops (the head and the first of the body).
READ_BYTES = 8 * 1024
#: What the daemon may grow by, all clients together: twisted's inflating a
#: whole 64 KB chunk at once took ~70 MB per client.
GROWTH_BOUND = 100 * MIB
#: An answer's write waiting this long for the daemon: the daemon stopped reading.
STALLED_SECONDS = 1.0

HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


def chat(content: str, stream: bool = False) -> bytes:
    document = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    if stream:
        document["stream"] = True
    return json.dumps(document).encode()


def post(daemon: Daemon, body: bytes) -> tuple[int, dict[str, str], bytes]:
    return daemon.request("POST", "/v1/chat/completions", body, HEADERS)


def rss(pid: int) -> int:
    """The resident set size of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def stalled_reader(url: str, body: bytes) -> tuple[socket.socket, bytes]:
    """
    A client that sends ``body`` as a chat call, reads the first
    :data:`READ_BYTES` of the answer, and then reads no more; its receive
    buffer is small, so the daemon's writes to it back up at once.
    """
    parts = urlsplit(url)
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.settimeout(30)
    reader.connect((parts.hostname, parts.port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    reader.sendall(head.encode() + body)
    received = b""
    while len(received) < READ_BYTES:
        data = reader.recv(READ_BYTES - len(received))
        assert data, received
        received += data
    return reader, received


@pytest.fixture
def readers() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for reader in made:
        reader.close()


def test_clients_that_stop_reading_a_gzip_bomb_cost_the_daemon_little_memory(
    start: Callable[..., Daemon], upstream: FakeUpstream, readers: list[socket.socket]
) -> None:
    daemon = start("--log-level", "warn")
    # A gzip'd answer end to end first, so that what is measured is the
    # bomb's cost, not the first call's.
    upstream.gzip = True
    assert post(daemon, chat("warm-up"))[0] == 200
    upstream.gzip = False
    upstream.writes.clear()
    upstream.serve_gzip_bomb()
    pid = daemon.process.pid
    before = peak = rss(pid)
    for n in range(CLIENTS):
        reader, received = stalled_reader(daemon.url, chat(f"bomb {n}", stream=n % 2 == 1))
        readers.append(reader)
        assert received.startswith(b"HTTP/1.1 200 "), received[:200]
        assert b"\r\n\r\n" in received and b"000000" in received

    def sent_all_it_can() -> bool:
        nonlocal peak
        peak = max(peak, rss(pid))
        return upstream.writes_stalled(CLIENTS, STALLED_SECONDS)

    poll_until(sent_all_it_can, deadline=60)
    peak = max(peak, rss(pid))
    growth = peak - before
    assert growth < GROWTH_BOUND, f"the daemon grew by {growth / MIB:.0f} MB"
    print(f"\n{CLIENTS} stalled readers of a gzip bomb: RSS grew by {growth / MIB:.1f} MB")
    for reader in readers:
        reader.close()
    readers.clear()
    # The daemon lets the upstream go, stores nothing of the bombs, and goes on serving.
    assert daemon.get_json("/health")["status"] == "healthy"
    assert daemon.get_json("/stats")["totalEntries"] == 1
    upstream.gzip = True
    upstream.handler = None
    status, headers, _ = post(daemon, chat("warm-up"))
    assert (status, headers["x-stasis-status"]) == (200, "HIT")


def test_a_gzip_answer_arrives_decoded_and_is_stored_decoded(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    answer = b'{"object": "chat.completion", "text": "' + b"plenty of words " * 20_000 + b'"}'
    upstream.handler = lambda r: Reply(200, [("Content-Type", "application/json")], answer)
    upstream.gzip = True
    first = post(daemon, chat("gzip"))
    second = post(daemon, chat("gzip"))
    assert (first[0], first[1]["x-stasis-status"], first[2]) == (200, "MISS", answer)
    assert (second[0], second[1]["x-stasis-status"], second[2]) == (200, "HIT", answer)
    assert "content-encoding" not in first[1] and "content-encoding" not in second[1]
    assert len(upstream.calls()) == 1
    assert upstream.calls()[0].headers["accept-encoding"] == "gzip"
    assert upstream.writes[1].sent < len(answer) // 10  # it really went gzip'd


def test_a_gzip_stream_arrives_decoded_event_by_event_and_is_stored(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    events = [sse_data({"n": n, "text": "word " * n}) for n in range(200)] + [b"data: [DONE]\n\n"]
    upstream.handler = lambda r: stream_reply(events)
    upstream.gzip = True
    first = post(daemon, chat("gzip stream", stream=True))
    second = post(daemon, chat("gzip stream", stream=True))
    assert (first[0], first[1]["x-stasis-status"], first[2]) == (200, "MISS", b"".join(events))
    assert (second[0], second[1]["x-stasis-status"], second[2]) == (200, "HIT", b"".join(events))
    assert "content-encoding" not in first[1]
    assert len(upstream.calls()) == 1


def corrupt(answer: bytes) -> bytes:
    """``answer`` gzip'd, with a stretch of its deflate data overwritten."""
    encoded = bytearray(gzip.compress(answer))
    middle = len(encoded) // 2
    encoded[middle : middle + 16] = b"\xff" * 16
    return bytes(encoded)


BIG = b'{"object": "chat.completion", "text": "' + bytes(range(32, 127)) * 2000 + b'"}'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this is not gzip at all", id="not-gzip"),
        pytest.param(corrupt(BIG), id="corrupt-deflate"),
        pytest.param(gzip.compress(BIG)[:-200], id="cut-short"),
        pytest.param(gzip.compress(BIG)[:-4], id="no-length-in-trailer"),
    ],
)
def test_a_gzip_body_that_does_not_decode_is_a_502_and_is_not_stored(
    daemon: Daemon, upstream: FakeUpstream, body: bytes
) -> None:
    """Framed whole by its Content-Length, but the gzip in it is broken or ends early."""
    upstream.handler = lambda r: Reply(
        200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], body
    )
    status, headers, answer = post(daemon, chat("broken gzip"))
    assert (status, headers["x-stasis-status"]) == (502, "MISS"), answer[:200]
    error = json.loads(answer)["error"]
    assert error["type"] == "stasis_upstream_unreachable"
    assert headers["cache-status"].endswith("detail=upstream-body-broken")
    daemon.wait_for_log(r"gzip-encoded body does not decode")
    upstream.handler = None
    status, headers, _ = post(daemon, chat("broken gzip"))
    assert (status, headers["x-stasis-status"]) == (200, "MISS")
    assert len(upstream.calls()) == 2
    assert daemon.get_json("/health")["status"] == "healthy"


def test_a_gzip_stream_that_breaks_mid_way_is_cut_off_and_not_stored(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    """The events before the break reach the client; then the answer ends unfinished."""
    events = [sse_data({"n": n}) for n in range(5)]
    deflate = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    chunks = [deflate.compress(event) + deflate.flush(zlib.Z_SYNC_FLUSH) for event in events]
    chunks.append(b"\xff" * 64)  # not deflate
    reply = stream_reply(chunks)
    reply.headers.append(("Content-Encoding", "gzip"))
    upstream.handler = lambda r: reply
    parts = urlsplit(daemon.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as client:
        body = chat("broken stream", stream=True)
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while data := client.recv(65536):
            received += data
    head, _, chunked = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    for event in events:
        assert event in chunked
    assert not chunked.endswith(b"0\r\n\r\n")  # no last chunk: the client knows it is cut
    assert daemon.get_json("/stats")["totalEntries"] == 0


def test_a_gzip_stream_in_several_members_is_decoded_whole(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    """RFC 1952: a gzip body may be a series of members (servers that gzip each write)."""
    events = [sse_data({"n": n}) for n in range(3)] + [b"data: [DONE]\n\n"]
    reply = stream_reply([gzip.compress(event) for event in events])
    reply.headers.append(("Content-Encoding", "gzip"))
    upstream.handler = lambda r: reply
    status, headers, answer = post(daemon, chat("members", stream=True))
    assert (status, headers["x-stasis-status"], answer) == (200, "MISS", b"".join(events))
    status, headers, answer = post(daemon, chat("members", stream=True))
    assert (status, headers["x-stasis-status"], answer) == (200, "HIT", b"".join(events))
