"""
The proxy floor: the fastest a twisted.web + treq process can pass a request through.

A leaf resource forwards each request to the upstream with stasis's own treq
client (the same pool, the same settings), reads the answer whole and returns
it: no key, no lookup, no recording, no commit, no log line. What a miss
through stasis costs beyond this is stasis's own work; what this costs beyond
calling the upstream directly is the framework's.

Run as ``python -m bench.proxyfloor --upstream URL``.
"""

from __future__ import annotations

import argparse
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bench.serve import serve
from stasis.headers import for_upstream
from stasis.upstream import UpstreamClient, make_client
from stasis.upstream.response import TreqResponse

__all__ = ["PassThrough"]


class PassThrough(Resource):
    """Forwards every request to ``upstream`` and answers with what came back."""

    isLeaf = True

    def __init__(self, upstream: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        the_reactor: Any = reactor
        http, _ = make_client(the_reactor)
        self.client = UpstreamClient(http, the_reactor, 30.0)
        self.upstream = upstream

    def render(self, request: Request) -> object:
        body = request.content.read() if request.content is not None else b""
        url = self.upstream + request.uri.decode("ascii")
        pairs = [
            (name, value)
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        d = self.client.request(request.method.decode("ascii"), url, for_upstream(pairs), body)

        async def answer(response: TreqResponse) -> None:
            data = await treq.content(response.response)
            request.setResponseCode(response.code)
            for name, value in response.headers:
                if name.lower() == b"content-type":
                    request.setHeader(b"content-type", value)
            request.write(data)
            request.finish()

        def failed(failure: Failure) -> None:
            request.setResponseCode(502)
            request.finish()

        d.addCallback(lambda response: ensureDeferred(answer(response))).addErrback(failed)
        return NOT_DONE_YET


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    args, _ = parser.parse_known_args()
    serve(PassThrough(args.upstream), "the benchmark's proxy floor")


if __name__ == "__main__":
    main()
