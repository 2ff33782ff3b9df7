"""
The floor: the fastest a twisted.web process can answer the benchmark's hit.

A leaf resource returns a constant body the size of stasis's cached answer,
on a ``Site`` without form parsing and without an access log. Whatever stasis
does beyond this (key derivation, the store lookup, header handling, its log
line) is its overhead, so hit results are reported as ratios to this process.

Run as ``python -m bench.floor --body-bytes N``.
"""

from __future__ import annotations

import argparse

from twisted.web.resource import Resource
from twisted.web.server import Request

from bench.payloads import completion
from bench.serve import serve

__all__ = ["Constant"]


class Constant(Resource):
    """Answers every request with the same JSON bytes."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.body = body

    def render(self, request: Request) -> bytes:
        if request.content is not None:
            request.content.read()
        request.setHeader(b"content-type", b"application/json")
        return self.body


def _body(size: int) -> bytes:
    body = completion(0, size)
    return body[:size].ljust(size, b" ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--body-bytes", type=int, default=1536)
    args, _ = parser.parse_known_args()
    serve(Constant(_body(args.body_bytes)), "the benchmark's floor")


if __name__ == "__main__":
    main()
