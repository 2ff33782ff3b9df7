"""
``GET /metrics``: the Prometheus text format, parsed with prometheus-client's
own parser; its counters move with the traffic sent through a real daemon,
each service has a registry of its own, and docs/admin-api.md lists what it
serves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest_twisted
import treq
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from stasis import Config, StasisService
from stasis.cache import Counters
from stasis.metrics import UPSTREAM_BUCKETS, Metrics
from stasis.model import StoreStats
from stasis.web.traffic import Seen, Traffic
from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"Authorization": "Bearer sk-metrics", "Content-Type": "application/json"}

#: One scrape: each sample's value by (name, labels as a sorted tuple).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """A scrape's samples, parsed by prometheus-client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _chat(n: int) -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {n}"}]}
    ).encode()


def _scrape(daemon: Daemon) -> Samples:
    status, headers, body = daemon.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE_LATEST
    return metric_samples(body.decode())


def test_the_counters_move_with_the_traffic(daemon: Daemon, upstream: FakeUpstream) -> None:
    before = _scrape(daemon)
    assert before[("stasis_cache_entries", ())] == 0
    assert not [name for name, _ in before if name.startswith("stasis_requests_total")]

    statuses = []
    for n in (1, 2, 3, 1, 2, 1, 1):  # three misses, then four hits (the last two prepared)
        _, headers, _ = daemon.request("POST", "/v1/chat/completions", _chat(n), HEADERS)
        statuses.append(headers["x-stasis-status"])
    _, headers, _ = daemon.request(
        "POST", "/v1/chat/completions", _chat(1), {**HEADERS, "X-Stasis-Mode": "bypass"}
    )
    statuses.append(headers["x-stasis-status"])
    assert statuses == ["MISS"] * 3 + ["HIT"] * 4 + ["BYPASS"]

    after = _scrape(daemon)
    stats = daemon.get_json("/stats")
    requests = {
        labels: value for (name, labels), value in after.items() if name == "stasis_requests_total"
    }
    assert requests == {
        (("cache", "BYPASS"), ("provider", "openai")): 1,
        (("cache", "HIT"), ("provider", "openai")): 4,
        (("cache", "MISS"), ("provider", "openai")): 3,
    }
    # Every answer fetched upstream (the misses and the bypass) was timed.
    assert len(upstream.calls()) == 4
    assert after[("stasis_upstream_latency_seconds_count", (("provider", "openai"),))] == 4
    assert (
        after[("stasis_upstream_latency_seconds_bucket", (("le", "+Inf"), ("provider", "openai")))]
        == 4
    )
    assert after[("stasis_cache_entries", ())] == stats["totalEntries"] == 3
    assert after[("stasis_cache_bytes", ())] > 0
    assert after[("stasis_tokens_saved_total", ())] == stats["tokensSavedSinceStart"] == 4 * 18
    for name in ("coalesced_requests", "evictions", "store_errors"):
        assert after[(f"stasis_{name}_total", ())] == 0


def test_head_answers_and_other_methods_go_upstream(daemon: Daemon, upstream: FakeUpstream) -> None:
    status, headers, body = daemon.request("HEAD", "/metrics")
    assert (status, headers["content-type"], body) == (200, CONTENT_TYPE_LATEST, b"")
    # A POST to /metrics is an API call like any other, as one to /health is.
    daemon.request("POST", "/metrics", b"{}", HEADERS)
    assert [call.path for call in upstream.calls()] == ["/metrics"]


@pytest_twisted.ensureDeferred
async def test_two_services_in_one_process_count_apart(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Each its own registry: neither sees the other's requests, and no name clashes."""
    services = [
        StasisService(
            Config(
                listen="tcp:0:interface=127.0.0.1",
                db=str(tmp_path / f"{name}.db"),
                upstream=upstream.url,
            )
        )
        for name in ("one", "two")
    ]
    urls = []
    for service in services:
        service.startService()
    try:
        for service in services:
            address = (await service.when_listening()).getHost()
            assert isinstance(address, IPv4Address)
            urls.append(f"http://127.0.0.1:{address.port}")
        for n in (1, 1, 2):
            response = await treq.post(
                urls[0] + "/v1/chat/completions", _chat(n), headers=HEADERS, persistent=False
            )
            await response.content()
        scrapes = []
        for url in urls:
            response = await treq.get(url + "/metrics", persistent=False)
            scrapes.append(metric_samples((await response.content()).decode()))
    finally:
        for service in services:
            await service.stopService()
    one, two = scrapes
    assert one[("stasis_requests_total", (("cache", "MISS"), ("provider", "openai")))] == 2
    assert one[("stasis_requests_total", (("cache", "HIT"), ("provider", "openai")))] == 1
    assert one[("stasis_cache_entries", ())] == 2
    assert not [name for name, _ in two if name.startswith("stasis_requests_total")]
    assert two[("stasis_cache_entries", ())] == 0
    assert two[("stasis_tokens_saved_total", ())] == 0


def _seen(cache: str | None, provider: str = "openai", upstream: float | None = None) -> Seen:
    return Seen(
        at=0.0,
        method="POST",
        path="/v1/chat/completions",
        status=200,
        cache=cache,
        detail=None,
        provider=provider,
        model="gpt-4o-mini",
        namespace="",
        key=None,
        seconds=0.01,
        upstream_seconds=upstream,
        error=None,
    )


def test_the_registry_reads_the_counters_and_the_stores_figures() -> None:
    counters = Counters(tokens_saved=70, evictions=3, coalesced=5, store_errors=2)
    traffic = Traffic(Clock())
    metrics = Metrics(counters, traffic)
    traffic.record(_seen("MISS", upstream=0.07))
    traffic.record(_seen("BYPASS", provider="", upstream=200.0))
    traffic.record(_seen("HIT"))
    traffic.record(_seen("HIT"))
    traffic.record(_seen(None))  # stasis's own endpoint: not a proxied request
    counters.evictions += 1  # read at the scrape, not before
    stats = StoreStats(entries=9, tokens_saved=0, db_size_bytes=4096, oldest=None, newest=None)
    samples = metric_samples(metrics.render(stats).decode())
    assert samples[("stasis_coalesced_requests_total", ())] == 5
    assert samples[("stasis_evictions_total", ())] == 4
    assert samples[("stasis_store_errors_total", ())] == 2
    assert samples[("stasis_tokens_saved_total", ())] == 70
    assert samples[("stasis_cache_entries", ())] == 9
    assert samples[("stasis_cache_bytes", ())] == 4096
    assert samples[("stasis_requests_total", (("cache", "MISS"), ("provider", "openai")))] == 1
    assert samples[("stasis_requests_total", (("cache", "BYPASS"), ("provider", "unknown")))] == 1
    assert samples[("stasis_requests_total", (("cache", "HIT"), ("provider", "openai")))] == 2
    assert len([name for name, _ in samples if name == "stasis_requests_total"]) == 3
    openai = (("provider", "openai"),)
    assert samples[("stasis_upstream_latency_seconds_sum", openai)] == 0.07
    # 70 ms falls in the 0.1 s bucket; 200 s (an unknown provider's) only in +Inf.
    assert samples[("stasis_upstream_latency_seconds_bucket", (("le", "0.05"), *openai))] == 0
    assert samples[("stasis_upstream_latency_seconds_bucket", (("le", "0.1"), *openai))] == 1
    unknown = (("provider", "unknown"),)
    assert samples[("stasis_upstream_latency_seconds_bucket", (("le", "120.0"), *unknown))] == 0
    assert samples[("stasis_upstream_latency_seconds_bucket", (("le", "+Inf"), *unknown))] == 1
    assert (UPSTREAM_BUCKETS[0], UPSTREAM_BUCKETS[-1]) == (0.05, 120.0)


def _documented() -> dict[str, tuple[str, set[str]]]:
    """docs/admin-api.md's table of metrics: each name's type and labels."""
    text = (ROOT / "docs" / "admin-api.md").read_text()
    section = text.split("## `GET /metrics`", 1)[1]
    rows = re.findall(r"^\| `(stasis_\w+)` \| (\w+) \| ([^|]*)\|$", section, re.MULTILINE)
    # A label's values, in brackets after it, are not labels.
    return {
        name: (kind, set(re.findall(r"`(\w+)`", re.sub(r"\(.*?\)", "", labels))))
        for name, kind, labels in rows
    }


def test_the_documented_table_is_what_is_served() -> None:
    traffic = Traffic(Clock())
    metrics = Metrics(Counters(), traffic)
    traffic.record(_seen("MISS", upstream=1.0))
    text = metrics.render(StoreStats(0, 0, 0, None, None)).decode()
    served = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # prometheus-client's creation times of the counters, read as gauges
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        served[name] = (family.type, labels)
    assert served == _documented()
