"""
(k) Slow clients: 300 clients trickling a request's head and 200 its body, a
byte every ten seconds (issue 15, item 14): how long until the daemon has
closed them all, and what a hit costs meanwhile.

twisted.web's only timeout restarts with every byte, so without deadlines
such clients are never closed; each holds a file descriptor. With them, a
head is closed ``--header-timeout`` after its first byte and a body
``--body-timeout`` after the headers (plus a second per 500 bytes, here
none to speak of). The daemon runs with its defaults (15 s and 60 s);
``--quick`` shortens them to 3 s and 5 s and trickles a byte a second.
Hits are timed by wrk at c=1 before the slow clients connect, and while
they wait, before the first deadline.

A checkout without the deadlines is measured too (their clients are then
still open at the end: "not closed").
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time

from attrs import define

from bench.client import post
from bench.context import Context
from bench.payloads import chat_request
from bench.procs import BenchError, stasis_supports
from bench.report import Section, Target, ms, ratio

__all__ = ["KEY", "TITLE", "run"]

KEY = "k"
TITLE = "slow clients: 300 trickled heads and 200 trickled bodies, closed by their deadlines"
PATH = "/v1/chat/completions"
HEADS, BODIES = 300, 200
SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
SLOW_BODY = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
)
#: How long after the body deadline to keep watching before calling them not closed.
GRACE = 15.0


@define
class _Slow:
    kind: str
    sock: socket.socket
    started: float
    ended: float | None = None
    first_bytes: bytes = b""
    reset: bool = False


def _connect(port: int, kind: str, first: bytes) -> _Slow:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(first)
    slow = _Slow(kind, sock, time.monotonic())
    sock.setblocking(False)
    return slow


def _watch(slow: list[_Slow], every: float, give_up: float, stop: threading.Event) -> None:
    """Trickle a byte to each open client every ``every`` s; note when each is closed."""
    selector = selectors.DefaultSelector()
    for client in slow:
        selector.register(client.sock, selectors.EVENT_READ, client)
    end = time.monotonic() + give_up
    next_byte = time.monotonic() + every
    open_ = len(slow)
    while open_ and not stop.is_set() and time.monotonic() < end:
        if time.monotonic() >= next_byte:
            for client in slow:
                if client.ended is None:
                    with contextlib.suppress(OSError):  # closed: the selector says so next
                        client.sock.send(b" ")
            next_byte += every
        for key, _ in selector.select(timeout=max(0.0, min(next_byte, end) - time.monotonic())):
            client = key.data
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data, client.reset = b"", True
            if len(client.first_bytes) < 12:
                client.first_bytes += data[:12]
            if not data:
                client.ended = time.monotonic()
                selector.unregister(client.sock)
                client.sock.close()
                open_ -= 1
    selector.close()


def _latest(slow: list[_Slow], kind: str, t0: float) -> float | None:
    ends = [c.ended for c in slow if c.kind == kind]
    if any(e is None for e in ends):
        return None
    return max(e for e in ends if e is not None) - t0


def _seconds(value: float | None) -> str:
    return "not closed" if value is None else f"{value:.1f} s"


def run(ctx: Context) -> Section:
    deadlines = stasis_supports("--header-timeout")
    head_s, body_s, every = (3.0, 5.0, 1.0) if ctx.quick else (15.0, 60.0, 10.0)
    extra = ["--listen", "tcp:0:interface=127.0.0.1:backlog=511"]
    if deadlines and ctx.quick:
        extra += ["--header-timeout", str(head_s), "--body-timeout", str(body_s)]
    stasis = ctx.stasis("slowclients", None, *extra)
    url = stasis.url + PATH
    port = int(stasis.url.rsplit(":", 1)[1])
    body = chat_request("slow")
    body_file = ctx.file("slow.json", body)
    if [post(url, body).cache_status for _ in range(2)] != ["MISS", "HIT"]:
        raise BenchError("the slow-clients section's request did not become a HIT")
    hit_seconds = min(ctx.duration / 2, head_s / 3)

    ctx.load(url, body_file, 1, seconds=ctx.warmup / 2)
    alone = ctx.load(url, body_file, 1, seconds=hit_seconds)

    t0 = time.monotonic()
    slow = [_connect(port, "head", SLOW_HEAD) for _ in range(HEADS)]
    slow += [_connect(port, "body", SLOW_BODY) for _ in range(BODIES)]
    connected = time.monotonic() - t0
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(slow, every, body_s + GRACE, stop))
    watcher.start()
    try:
        beside = ctx.load(url, body_file, 1, seconds=hit_seconds)
        beside_ended = time.monotonic() - t0
        watcher.join()
    finally:
        stop.set()
        watcher.join()
        for client in slow:
            client.sock.close()
    stasis.stop()

    heads, bodies = _latest(slow, "head", t0), _latest(slow, "body", t0)
    answered = sum(c.first_bytes.startswith(b"HTTP/1.1 408") for c in slow)
    resets = sum(c.reset for c in slow)
    before_first = min((c.ended for c in slow if c.ended is not None), default=None)
    during_wait = before_first is None or beside_ended <= before_first - t0
    section = Section(
        KEY,
        TITLE,
        header=["", "value"],
        rows=[
            ["deadlines (head / body)", f"{head_s:.0f} s / {body_s:.0f} s" if deadlines else "-"],
            [f"{HEADS} heads all closed after", _seconds(heads)],
            [f"{BODIES} bodies all closed after", _seconds(bodies)],
            ["answered 408 / reset", f"{answered} / {resets} of {HEADS + BODIES}"],
            ["hit p50 c=1 alone", ms(alone.p50_us)],
            [f"hit p50 c=1 beside {HEADS + BODIES} slow clients", ms(beside.p50_us)],
        ],
        notes=[
            f"a byte every {every:.0f} s to each; connecting them all took {connected:.2f} s; "
            "times from the first connection"
            + ("" if during_wait else "; the hits ran past the first deadline"),
        ],
        data={
            "deadlines": deadlines,
            "head_timeout_s": head_s,
            "body_timeout_s": body_s,
            "trickle_every_s": every,
            "connect_s": connected,
            "heads_closed_s": heads,
            "bodies_closed_s": bodies,
            "answered_408": answered,
            "resets": resets,
            "hits_alone": alone.as_json(),
            "hits_beside": beside.as_json(),
        },
    )
    section.targets = [
        Target(
            "slow clients all closed",
            None if bodies is None or heads is None else max(heads, bodies),
            body_s + 5,
            "s",
            note="by the body deadline + 5 s",
        ),
        Target(
            "hit p50 beside 500 slow clients",
            ratio(beside.p50_us, alone.p50_us),
            1.5,
            "x alone",
        ),
    ]
    return section
