"""
The Prometheus metrics of one service: what ``GET /metrics`` renders.

Each service has its own :class:`~prometheus_client.CollectorRegistry`, never
prometheus-client's global one, so two daemons embedded in one process (or a
program that has metrics of its own) neither share nor clash over a name.

Three sources feed it, each the cheapest way to have its figures:

- the requests answered, as :class:`~stasis.web.traffic.Traffic` counts them
  by provider and cache status (read at each scrape), and hears of those that
  went upstream (:meth:`Metrics.observe`: how long the upstream took);
- the engine's :class:`~stasis.cache.Counters`, read when scraped (under
  ``--workers``, every worker's added up, as ``/stats`` has them);
- the store's figures (:class:`~stasis.model.StoreStats`), which the caller
  reads without blocking the reactor and hands to :meth:`Metrics.render`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from stasis.cache import Counters
from stasis.model import StoreStats
from stasis.web.traffic import Seen, Traffic

__all__ = ["UPSTREAM_BUCKETS", "Metrics"]

#: Upper bounds, in seconds, of the upstream latency histogram's buckets: an
#: LLM answers in anything from a few tens of milliseconds (a cached or tiny
#: completion) to minutes (a long generation before its head).
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

#: The ``provider`` label of a request whose provider is not known.
UNKNOWN_PROVIDER = "unknown"


class _RequestsCollector(Collector):
    """The requests Traffic counted, read at each scrape: a hit pays nothing for being counted."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "stasis_requests",
            "Requests to the proxy, by provider and cache status (HIT, MISS, BYPASS, STALE).",
            labels=["provider", "cache"],
        )
        for (provider, cache), count in sorted(self.traffic.requests.items()):
            family.add_metric([provider or UNKNOWN_PROVIDER, cache], count)
        yield family


class _CountersCollector(Collector):
    """The engine's counters, read at each scrape: nothing to keep in step with them."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        counters = self.counters
        for name, documentation, value in (
            (
                "stasis_coalesced_requests",
                "Requests answered by an identical request's upstream call they joined.",
                counters.coalesced,
            ),
            (
                "stasis_evictions",
                "Entries removed to keep the cache within --max-size and --max-entries.",
                counters.evictions,
            ),
            (
                "stasis_store_errors",
                "Reads and writes of the cache database that failed.",
                counters.store_errors,
            ),
            (
                "stasis_tokens_saved",
                "Tokens the cache hits would have cost at the upstream.",
                counters.tokens_saved,
            ),
        ):
            yield CounterMetricFamily(name, documentation, value=value)


class Metrics:
    """One service's registry and the metrics in it."""

    def __init__(self, counters: Counters, traffic: Traffic) -> None:
        #: What the counters' metrics read (under ``--workers``, every worker's sum).
        self.counters = counters
        self.registry = CollectorRegistry()
        self.registry.register(_RequestsCollector(traffic))
        self.upstream_latency = Histogram(
            "stasis_upstream_latency_seconds",
            "Seconds from sending a request upstream to the head of its answer.",
            ["provider"],
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.entries = Gauge(
            "stasis_cache_entries", "Entries in the cache database.", registry=self.registry
        )
        self.bytes = Gauge(
            "stasis_cache_bytes",
            "The cache database's size in bytes (/stats' dbSizeBytes).",
            registry=self.registry,
        )
        self.registry.register(_CountersCollector(counters))
        traffic.subscribe(self.observe)

    def observe(self, seen: Seen) -> None:
        """Time an answer fetched upstream (Traffic tells of those only)."""
        if seen.upstream_seconds is not None:
            provider = seen.provider or UNKNOWN_PROVIDER
            self.upstream_latency.labels(provider).observe(seen.upstream_seconds)

    def render(self, stats: StoreStats) -> bytes:
        """The text format (``CONTENT_TYPE_LATEST``), with the store's ``stats`` as of now."""
        self.entries.set(stats.entries)
        self.bytes.set(stats.db_size_bytes)
        return generate_latest(self.registry)
