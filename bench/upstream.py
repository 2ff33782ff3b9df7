"""
The fake LLM upstream: fast enough that the benchmark measures stasis, not it.

A twisted.web process of its own answers ``POST``s with a ~1.5 KB chat
completion (with usage, varied among a few prepared bodies), or, for a request
whose JSON says ``"stream": true``, with a server-sent-event stream of
``X-Bench-Stream-Bytes`` bytes (default 1 MiB) written in 64 KiB blocks of
whole events. ``GET /_bench/calls`` says how many ``POST``s it has answered and
how many of them repeated a body it had answered before, so a section can
prove how many requests reached the upstream. Streams are
written by a pull producer, so a reader that stops reading stops the upstream
instead of filling its memory, and 50 MB flow in a fraction of a second to a
reader that keeps up.

Run as ``python -m bench.upstream``.
"""

from __future__ import annotations

import hashlib
import itertools
import json

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bench.payloads import completion, sse_block, sse_done
from bench.serve import serve

__all__ = ["CALLS_PATH", "DEFAULT_STREAM_BYTES", "STREAM_BYTES_HEADER", "Upstream"]

STREAM_BYTES_HEADER = b"x-bench-stream-bytes"
#: ``GET`` this path for ``{"calls": N, "repeated": R}``: ``POST``s answered so far,
#: and how many of them had a body answered before.
CALLS_PATH = "/_bench/calls"
DEFAULT_STREAM_BYTES = 1 << 20
_BODIES = [completion(seed) for seed in range(64)]
_BLOCK = sse_block()


def _wants_stream(body: bytes) -> bool:
    if b'"stream"' not in body:
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("stream") is True


class _Stream:
    """A pull producer writing about ``total`` bytes of events, then ``[DONE]``."""

    def __init__(self, request: Request, total: int) -> None:
        self.request = request
        self.remaining = total
        self.stopped = False
        request.notifyFinish().addErrback(lambda failure: self.stopProducing())

    def resumeProducing(self) -> None:
        if self.stopped:
            return
        if self.remaining <= 0:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.write(sse_done())
            self.request.finish()
            return
        chunk = _BLOCK
        if self.remaining < len(_BLOCK):
            cut = _BLOCK.rfind(b"\n\n", 0, self.remaining) + 2
            chunk = _BLOCK[: max(cut, _BLOCK.index(b"\n\n") + 2)]
        self.remaining -= len(chunk)
        self.request.write(chunk)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


class Upstream(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._next = itertools.cycle(_BODIES)
        self.calls = 0
        self.repeated = 0
        self._seen: set[bytes] = set()

    def render(self, request: Request) -> object:
        if request.method == b"GET" and request.path == CALLS_PATH.encode():
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"calls": self.calls, "repeated": self.repeated}).encode()
        body = request.content.read() if request.content is not None else b""
        self.calls += 1
        digest = hashlib.sha256(body).digest()
        if digest in self._seen:
            self.repeated += 1
            print(f"repeated body: {body[-80:]!r}", flush=True)
        self._seen.add(digest)
        if not _wants_stream(body):
            request.setHeader(b"content-type", b"application/json")
            return next(self._next)
        size = request.getHeader(STREAM_BYTES_HEADER)
        total = int(size) if size else DEFAULT_STREAM_BYTES
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        # The first event goes out at once, as a model's first token would.
        first_end = _BLOCK.index(b"\n\n") + 2
        request.write(_BLOCK[:first_end])
        producer = _Stream(request, total - first_end)
        request.registerProducer(producer, False)
        return NOT_DONE_YET


def main() -> None:
    serve(Upstream(), "the benchmark's fake LLM upstream")


if __name__ == "__main__":
    main()
