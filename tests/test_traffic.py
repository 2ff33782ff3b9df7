"""
The recent requests and the per-minute series: what the site records of each
proxied request as it writes its access line.
"""

from __future__ import annotations

import json
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from stasis.modes import Mode
from stasis.web.prepared import PreparedHeads
from stasis.web.proxy import ProxyResource
from stasis.web.root import Root
from stasis.web.site import StasisSite
from stasis.web.traffic import MODEL_CHARACTERS, Seen, Traffic
from tests.test_prepared_hits import _request
from tests.test_proxy_resource import Harness


class Site:
    """A StasisSite with its Traffic, over the in-memory engine."""

    def __init__(self, mode: Mode = Mode.CACHE) -> None:
        self.clock = clock = Clock()
        clock.advance(time.time())
        self.harness = harness = Harness(clock=clock, mode=mode)
        heads = PreparedHeads()
        harness.store.changes.subscribe(heads.on_change)
        proxy = ProxyResource(harness.engine, heads)
        self.site = StasisSite(Root(proxy, harness.store, harness.counters), max_body_bytes=1 << 20)
        self.traffic = self.site.traffic = Traffic(clock)

    def send(self, raw: bytes) -> bytes:
        transport = StringTransport()
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        for _ in range(10):
            self.harness.upstream.flush()
        return transport.value()


def test_a_miss_and_its_hits_are_recorded_with_what_they_were_about() -> None:
    site = Site()
    fetched: list[Seen] = []
    site.traffic.subscribe(fetched.append)
    site.send(_request())
    site.clock.advance(1)
    site.send(_request())
    site.send(_request())
    last, recent = site.traffic.recent()
    assert last == 3
    assert [n for n, _ in recent] == [1, 2, 3]
    miss, hit, prepared = (seen for _, seen in recent)
    key = next(iter(site.harness.store.entries))
    assert (miss.cache, miss.detail, miss.status) == ("MISS", "stored", 200)
    assert (hit.cache, hit.detail) == ("HIT", None)
    for seen in (miss, hit, prepared):
        assert (seen.method, seen.path, seen.provider, seen.model) == (
            "POST",
            "/v1/chat/completions",
            "openai",
            "gpt-4o-mini",
        )
        assert seen.key == key
        assert seen.error is None
        # The caller's key never reaches a record.
        assert "sk-test" not in repr(seen)
    assert miss.upstream_seconds is not None and miss.upstream_seconds >= 0
    assert hit.upstream_seconds is None
    # Observers hear of what went upstream only: a hit must stay cheap.
    assert fetched == [miss]
    assert site.traffic.requests == {("openai", "MISS"): 1, ("openai", "HIT"): 2}
    # Only what is newer than the last one a poller saw.
    assert site.traffic.recent(after=2) == (3, [recent[2]])
    assert site.traffic.recent(after=3) == (3, [])


def test_a_replay_miss_is_recorded_with_the_diagnostics_its_client_read() -> None:
    site = Site(Mode.REPLAY)
    answer = site.send(_request())
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    [(_, seen)] = site.traffic.recent()[1]
    assert (seen.status, seen.cache, seen.detail) == (504, "MISS", "replay-miss")
    assert seen.error == body["error"]
    assert seen.error is not None and seen.error["type"] == "stasis_replay_miss"
    assert site.harness.api.seen == []


def test_stasis_own_endpoints_are_not_recorded() -> None:
    site = Site()
    site.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert site.traffic.recent() == (0, [])


def _seen(at: float, cache: str | None, upstream_seconds: float | None = None) -> Seen:
    return Seen(
        at=at,
        method="POST",
        path="/v1/chat/completions",
        status=200,
        cache=cache,
        detail=None,
        provider="openai",
        model="m",
        namespace="",
        key=None,
        seconds=0.001,
        upstream_seconds=upstream_seconds,
        error=None,
    )


def test_the_series_counts_each_minute_and_shows_quiet_minutes_as_zeros() -> None:
    clock = Clock()
    clock.advance(600)  # 10:00 into the epoch: a minute's start
    traffic = Traffic(clock)
    traffic.record(_seen(600, "HIT"))
    traffic.record(_seen(610, "MISS"))
    traffic.record(_seen(659, "STALE"))
    clock.advance(180)
    traffic.record(_seen(785, "BYPASS"))
    traffic.record(_seen(786, None))  # not a cache's answer: in no column
    assert traffic.series(60) == [
        (600.0, 2, 1, 0),
        (660.0, 0, 0, 0),
        (720.0, 0, 0, 0),
        (780.0, 0, 0, 1),
    ]
    # The last minutes only; never before the daemon started.
    assert traffic.series(2) == [(720.0, 0, 0, 0), (780.0, 0, 0, 1)]
    assert traffic.series(0) == [(780.0, 0, 0, 1)]


def test_only_the_last_requests_are_kept() -> None:
    traffic = Traffic(Clock(), keep=3)
    for n in range(5):
        traffic.record(_seen(n, "HIT"))
    last, recent = traffic.recent()
    assert last == 5
    assert [n for n, _ in recent] == [3, 4, 5]
    assert traffic.requests == {("openai", "HIT"): 5}


def test_a_client_chosen_model_name_is_kept_short() -> None:
    site = Site()
    long = "m" * 50_000  # under 64 KiB: a body read whole, its model with it
    body = json.dumps({"model": long, "messages": [{"role": "user", "content": "hi"}]}).encode()
    site.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    [(_, seen)] = site.traffic.recent()[1]
    assert seen.cache == "MISS"
    assert seen.model == "m" * MODEL_CHARACTERS
