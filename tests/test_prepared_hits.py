"""
Hits written from prepared header bytes: what reaches the wire, byte for byte.

The proxy writes a plain hit's status line, headers and body itself instead
of setting each header through twisted.web, so these tests read the raw bytes
a real ``HTTPChannel`` writes and hold them to what twisted.web would have
written: each header once, the right framing, keep-alive and
``Connection: close`` honoured.
"""

from __future__ import annotations

import gc
import json
import time

import pytest
from attrs import evolve
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from stasis.cache import engine as engine_module
from stasis.cache.counters import HIT_FLUSH_SECONDS
from stasis.model import Change, ChangeKind, Entry
from stasis.web.prepared import PreparedHead, PreparedHeads
from stasis.web.proxy import ProxyResource
from stasis.web.root import Root
from stasis.web.site import StasisSite
from tests.test_proxy_resource import CHAT, Harness

BODY = json.dumps(CHAT).encode()


def _request(version: bytes = b"HTTP/1.1", *extra: bytes) -> bytes:
    lines = [
        b"POST /v1/chat/completions " + version,
        b"Host: 127.0.0.1:4000",
        b"Authorization: Bearer sk-test",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(BODY),
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + BODY


class Wire:
    """A StasisSite over the proxy, spoken to through one in-memory connection."""

    def __init__(self) -> None:
        clock = Clock()
        clock.advance(time.time())
        self.harness = harness = Harness(clock=clock)
        self.clock, self.api, self.upstream, self.store = (
            clock,
            harness.api,
            harness.upstream,
            harness.store,
        )
        self.heads = PreparedHeads()
        self.store.changes.subscribe(self.heads.on_change)
        proxy = ProxyResource(harness.engine, self.heads)
        self.site = StasisSite(Root(proxy, self.store, harness.counters), max_body_bytes=1 << 20)
        self.transport = StringTransport()
        self.channel = self.site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        """The status line, the headers (lower-case names, in order) and the body."""
        self.transport.clear()
        self.channel.dataReceived(raw)
        for _ in range(10):
            self.upstream.flush()
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = [(name.lower(), value) for name, _, value in (x.partition(b": ") for x in lines)]
        return status, headers, body


def test_a_hit_is_written_whole_with_each_header_once() -> None:
    wire = Wire()
    status, miss_headers, answer = wire.send(_request())
    assert (status, dict(miss_headers)[b"x-stasis-status"]) == (b"HTTP/1.1 200 OK", b"MISS")
    # A stored answer that is not a stream is written whole, framed by its length.
    assert dict(miss_headers)[b"content-length"] == b"%d" % len(answer)
    assert b"transfer-encoding" not in dict(miss_headers)
    # The second is a hit found by its key, the third by its bytes: both prepared.
    for _ in range(2):
        wire.clock.advance(3)
        status, headers, body = wire.send(_request())
        names = [name for name, _ in headers]
        assert status == b"HTTP/1.1 200 OK"
        assert len(names) == len(set(names)), names
        found = dict(headers)
        assert found[b"x-stasis-status"] == b"HIT"
        assert found[b"cache-status"] == b"stasis; hit"
        assert found[b"x-stasis-key"] == next(iter(wire.store.entries)).encode()
        assert found[b"x-request-id"] == b"req_1"
        assert found[b"content-type"] == b"application/json"
        assert found[b"content-length"] == b"%d" % len(answer)
        assert found[b"age"] in (b"3", b"6")
        assert b"date" in found and b"server" in found
        assert b"transfer-encoding" not in found and b"set-cookie" not in found
        assert body == answer
    assert not wire.transport.disconnecting
    assert len(wire.api.seen) == 1
    wire.clock.advance(HIT_FLUSH_SECONDS)
    assert next(iter(wire.store.entries.values())).hit_count == 2


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        out, body = out + rest[:length], rest[length + 2 :]
    return out


def test_a_stored_answer_over_the_hold_limit_is_relayed_chunked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "HELD_BODY_BYTES", 16)
    wire = Wire()
    status, headers, chunked = wire.send(_request())
    assert (status, dict(headers)[b"x-stasis-status"]) == (b"HTTP/1.1 200 OK", b"MISS")
    assert dict(headers)[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in dict(headers)
    answer = _dechunk(chunked)
    assert json.loads(answer)["n"] == 1
    (entry,) = wire.store.entries.values()
    assert entry.body == answer


def test_a_stored_204_gets_no_length_and_no_body() -> None:
    wire = Wire()
    wire.api.status = 204
    status, headers, body = wire.send(_request())
    assert (status, dict(headers)[b"x-stasis-status"]) == (b"HTTP/1.1 204 No Content", b"MISS")
    assert b"content-length" not in dict(headers)
    assert b"transfer-encoding" not in dict(headers)
    assert body == b""
    assert len(wire.store.entries) == 1


def test_a_client_that_asks_to_close_gets_connection_close() -> None:
    wire = Wire()
    wire.send(_request())
    wire.send(_request())
    status, headers, _ = wire.send(_request(b"HTTP/1.1", b"Connection: close"))
    assert (status, dict(headers)[b"x-stasis-status"]) == (b"HTTP/1.1 200 OK", b"HIT")
    assert dict(headers)[b"connection"] == b"close"
    assert wire.transport.disconnecting


def test_an_http_1_0_client_gets_an_http_1_0_answer() -> None:
    wire = Wire()
    wire.send(_request())
    wire.send(_request())
    status, headers, body = wire.send(_request(b"HTTP/1.0"))
    assert status == b"HTTP/1.0 200 OK"
    assert dict(headers)[b"x-stasis-status"] == b"HIT"
    assert len(body) == int(dict(headers)[b"content-length"])
    assert wire.transport.disconnecting


def _entry(**changes: object) -> Entry:
    entry = Entry(
        key="ab" * 32,
        status=200,
        headers=((b"content-type", b"application/json"), (b"server", b"upstream/1.0")),
        body=b'{"ok": true}',
        created_at=0.0,
    )
    return evolve(entry, **changes)


def test_prepared_heads_are_only_reused_for_the_same_entry_object() -> None:
    heads = PreparedHeads()
    entry = _entry()
    head = heads.of(entry)
    assert heads.of(entry) is head
    assert head.lines.startswith(b"Content-Type: application/json\r\nServer: upstream/1.0\r\n")
    assert b"X-Stasis-Key: " + b"ab" * 32 + b"\r\n" in head.lines
    assert {b"server", b"age", b"content-length", b"x-stasis-key"} <= head.names
    # The same key refreshed (a new object): new bytes, never the old ones.
    refreshed = _entry(headers=((b"content-type", b"text/plain"),))
    again = heads.of(refreshed)
    assert again is not head
    assert b"text/plain" in again.lines and b"upstream/1.0" not in again.lines


def test_prepared_heads_do_not_keep_entries_alive_and_are_bounded() -> None:
    heads = PreparedHeads(size=2)
    entry = _entry()
    head: PreparedHead = heads.of(entry)
    del entry
    gc.collect()
    assert head.entry() is None
    for n in range(5):
        heads.of(_entry(key=f"{n:064x}"))
    assert len(heads) == 2


def test_a_removed_entry_loses_its_prepared_head() -> None:
    wire = Wire()
    wire.send(_request())
    wire.send(_request())
    assert len(wire.heads) == 1
    (key,) = wire.store.entries
    wire.store.external(Change(ChangeKind.DELETE, (key,)))
    assert len(wire.heads) == 0
    _, headers, _ = wire.send(_request())
    assert dict(headers)[b"x-stasis-status"] == b"MISS"


def test_every_answer_carries_one_server_and_one_date() -> None:
    wire = Wire()
    answers = [wire.send(_request()), wire.send(_request())]  # a miss, then a prepared hit
    wire.api.status = 429  # a different body: another miss, relayed, not stored
    answers.append(wire.send(_request().replace(b'"hi"', b'"ho"')))
    # A stasis error, written through twisted.web.
    answers.append(wire.send(_request(b"HTTP/1.1", b"X-Stasis-Mode: nonsense")))
    assert [status.split(b" ")[1] for status, _, _ in answers] == [b"200", b"200", b"429", b"400"]
    for _, headers, _ in answers:
        names = [name for name, _ in headers]
        assert names.count(b"server") == 1 and names.count(b"date") == 1, names
        date = dict(headers)[b"date"]
        assert date.endswith(b" GMT") and len(date) == 29
