"""
End to end: a large request body is keyed without holding up the daemon (issue 15).

A 60 MB JSON array of ``1`` took a minute and 6.1 GB to key, and ``/health``
waited as long: ``json.loads`` ran in C, holding the interpreter, even in the
thread large bodies are keyed in. Now such a body is keyed by its bytes at
once, and a large body that is keyed canonically is read in small steps that
give the reactor its turn.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-big"}
PATH = "/v1/embeddings"
CHAT = "/v1/chat/completions"
#: Generous: parsing the dense body below whole held the interpreter for ~6 s here.
PROMPT = 2.0


def _health_while(daemon: Daemon, until: Callable[[], bool], once: bool = False) -> float:
    """Ask /health again and again until ``until()`` holds (or ``once``): its longest wait."""
    worst = 0.0
    deadline = time.monotonic() + 120
    while once or not until():
        assert time.monotonic() < deadline, "the large request did not get there"
        asked = time.monotonic()
        status, _, _ = daemon.request("GET", "/health")
        assert status == 200
        worst = max(worst, time.monotonic() - asked)
        if once:
            break
    return worst


def _keyed_twice(daemon: Daemon, upstream: FakeUpstream, first: bytes, second: bytes) -> float:
    """
    ``first`` (a miss), then ``second`` (a hit), asking /health all along while
    each is received and keyed: until the upstream has the miss (held there, so
    that the database's commit of the large entry, which /health waits for,
    comes later), and until the hit is answered. /health's longest wait.
    """
    gate = threading.Event()
    upstream.hold_until(gate)
    answers: list[tuple[int, dict[str, str], bytes]] = []

    def send(body: bytes) -> threading.Thread:
        def post() -> None:
            request = urllib.request.Request(daemon.url + PATH, body, HEADERS, method="POST")
            with urllib.request.urlopen(request, timeout=120) as response:  # a loaded machine
                headers = {k.lower(): v for k, v in response.headers.items()}
                answers.append((response.status, headers, response.read()))

        sender = threading.Thread(target=post)
        sender.start()
        return sender

    sender = send(first)
    worst = _health_while(daemon, lambda: len(upstream.calls(PATH)) == 1)
    gate.set()
    sender.join()
    daemon.request("GET", "/health")  # once the entry is committed
    sender = send(second)
    worst = max(worst, _health_while(daemon, lambda: not sender.is_alive()))
    sender.join()
    (miss, _, _), (hit, _, _) = answers
    assert (miss, hit) == (200, 200), answers
    assert answers[0][1]["x-stasis-status"] == "MISS"
    assert answers[1][1]["x-stasis-status"] == "HIT"
    assert answers[1][1]["x-stasis-key"] == answers[0][1]["x-stasis-key"]
    assert len(upstream.calls(PATH)) == 1
    return worst


def test_a_dense_body_is_keyed_at_once_and_health_answers_meanwhile(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    ones = b",".join([b"1"] * 12_000_000)
    body = b'{"model": "text-embedding-3-small", "input": [' + ones + b"]}"  # 24 MB
    worst = _keyed_twice(daemon, upstream, body, body)
    assert worst < PROMPT, f"/health waited {worst:.1f}s"


def test_a_large_body_keyed_canonically_is_a_hit_in_another_spelling(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    rnd = random.Random(8)
    floats = [rnd.uniform(-1, 1) for _ in range(400_000)]
    document = {"input": floats, "model": "text-embedding-3-small"}
    compact = json.dumps(document, separators=(",", ":")).encode()  # 8 MB
    spaced = json.dumps(dict(reversed(document.items())), indent=1).encode()
    worst = _keyed_twice(daemon, upstream, compact, spaced)
    assert worst < PROMPT, f"/health waited {worst:.1f}s"
    # The model is read from a large body too, after the array it follows.
    with sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True) as db:
        assert db.execute("SELECT model FROM entries").fetchall() == [("text-embedding-3-small",)]


def _conversation(size: int) -> bytes:
    rnd = random.Random(9)
    words = ["the", "cache", "keeps", "every", "answer", "it", "was", "given", "café", "東京"]
    messages: list[dict[str, str]] = []
    while len(messages) * 400 < size:
        text = " ".join(rnd.choice(words) for _ in range(70))
        messages.append({"role": ("user", "assistant")[len(messages) % 2], "content": text})
    return json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()


def test_the_whole_miss_of_a_large_body_leaves_health_prompt(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    # Keyed, forwarded, and stored: /health waits for a pending commit, and the
    # stored request is compressed in it (at deflate's level 9, 12 MB of chat
    # text took ~4 s; 60 MB, 19 s).
    body = _conversation(12_000_000)
    answers: list[int] = []
    sender = threading.Thread(
        target=lambda: answers.append(daemon.request("POST", CHAT, body, HEADERS)[0])
    )
    sender.start()
    worst = _health_while(daemon, lambda: not sender.is_alive())
    sender.join()
    worst = max(worst, _health_while(daemon, lambda: False, once=True))
    assert answers == [200]
    assert worst < PROMPT, f"/health waited {worst:.1f}s"
    status, headers, _ = daemon.request("POST", CHAT, body, HEADERS)
    assert (status, headers["x-stasis-status"]) == (200, "HIT")
