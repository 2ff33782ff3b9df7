"""
Mixed traffic with every answer checked: what the hold and soak sections send.

Many clients at once, each on its own keep-alive connection, send a mix of
hits (requests warmed beforehand, whose answers must come back byte for byte),
new misses (a request no one sent before), misses several clients send at the
same moment (the same request per 200 ms window, so single flight is in play)
and streams among each kind. Every answer must be a 200 whose body is whole
(a stream ends with ``[DONE]``); anything else is an error, kept with what it
was. Afterwards a section compares the distinct misses sent with the calls
the fake upstream counted and with the entries the daemon stored.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from attrs import define, field

from bench.client import post
from bench.payloads import chat_request
from bench.procs import BenchError
from bench.upstream import STREAM_BYTES_HEADER

__all__ = ["Mix", "Tally", "run_tag", "warm"]

PATH = "/v1/chat/completions"
#: Streams are kept small: the mix is about many requests, not bandwidth.
HEADERS = {"Content-Type": "application/json", STREAM_BYTES_HEADER.decode(): "16384"}
#: Shares of each kind of request (the rest are misses several clients send together).
HIT_SHARE = 0.6
NEW_MISS_SHARE = 0.25
STREAM_SHARE = 0.3
DONE = b"data: [DONE]\n\n"


def run_tag() -> str:
    """Tells one run's requests from another's, so no two runs (or sections) send the same."""
    return f"{time.time_ns():x}"


def warm(url: str, count: int, tag: str) -> dict[bytes, bytes]:
    """``count`` requests (a third of them streams) made HITs: request -> the answer a HIT gives."""
    answers: dict[bytes, bytes] = {}
    for n in range(count):
        body = chat_request(f"warm-{tag}-{n}", stream=n % 3 == 0)
        first = post(url + PATH, body, HEADERS)
        second = post(url + PATH, body, HEADERS)
        if (first.cache_status, second.cache_status) != ("MISS", "HIT"):
            raise BenchError(f"warming {n}: {first.cache_status}, {second.cache_status}")
        answers[body] = second.body
    return answers


@define
class Tally:
    """What the clients sent and what went wrong, added to under a lock."""

    requests: int = 0
    #: Every distinct request sent that was not warmed: each must reach the upstream once.
    misses: set[bytes] = field(factory=set)
    errors: list[str] = field(factory=list)
    latencies: list[float] = field(factory=list)
    lock: threading.Lock = field(factory=threading.Lock)

    def count(self, seconds: float, miss: bytes | None, error: str | None) -> None:
        with self.lock:
            self.requests += 1
            self.latencies.append(seconds)
            if miss is not None:
                self.misses.add(miss)
            if error is not None:
                self.errors.append(error)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@define
class Mix:
    """``clients`` threads sending the mix to ``url`` until ``seconds`` pass."""

    url: str
    warmed: dict[bytes, bytes]
    clients: int
    seconds: float
    #: Part of every new request's text (see :func:`run_tag`).
    tag: str
    tally: Tally = field(factory=Tally)

    def run(self, beside: Callable[[], None] | None = None) -> Tally:
        """Run the clients; ``beside`` runs in this thread meanwhile (sampling, say)."""
        deadline = time.monotonic() + self.seconds
        threads = [
            threading.Thread(target=self._client, args=(n, deadline), daemon=True)
            for n in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        if beside is not None:
            beside()
        for thread in threads:
            thread.join(self.seconds + 120)
        return self.tally

    def _client(self, number: int, deadline: float) -> None:
        rng = random.Random(number)
        warmed = list(self.warmed)
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.netloc, timeout=60)
        sent = 0
        while time.monotonic() < deadline:
            sent += 1
            roll = rng.random()
            stream = rng.random() < STREAM_SHARE
            expected: bytes | None = None
            if roll < HIT_SHARE:
                body = rng.choice(warmed)
                expected = self.warmed[body]
            elif roll < HIT_SHARE + NEW_MISS_SHARE:
                body = chat_request(f"miss-{self.tag}-{number}-{sent}", stream=stream)
            else:
                window = int(time.monotonic() * 5)
                body = chat_request(f"together-{self.tag}-{window}", stream=window % 3 == 0)
            started = time.perf_counter()
            try:
                connection.request("POST", PATH, body, HEADERS)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as e:
                connection.close()
                connection = http.client.HTTPConnection(parts.netloc, timeout=60)
                self.tally.count(0.0, None, f"{type(e).__name__}: {e}")
                continue
            elapsed = time.perf_counter() - started
            self.tally.count(
                elapsed,
                None if expected is not None else body,
                _problem(response, answer, expected, body),
            )
        connection.close()


def _problem(
    response: http.client.HTTPResponse, answer: bytes, expected: bytes | None, body: bytes
) -> str | None:
    """What is wrong with an answer, or None."""
    status = response.getheader("x-stasis-status", "-")
    if response.status != 200:
        return f"{response.status} {status}: {answer[:120]!r}"
    if expected is not None and (status != "HIT" or answer != expected):
        same = "the same" if answer == expected else "other"
        return f"a warmed request answered {status}, {same} bytes"
    if b'"stream": true' in body and not answer.endswith(DONE):
        return f"a stream ({status}) ended without [DONE]"
    return None
