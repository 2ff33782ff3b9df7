"""
Run a twisted.web ``Site`` on an ephemeral loopback port and announce the port.

The fake upstream and the floor are separate processes, each with its own
reactor and core time, so that neither shares an event loop with stasis or
with the other; the harness learns the port from the one line printed here.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

__all__ = ["LISTENING", "serve"]

#: The line a helper prints once it listens; the harness waits for it.
LISTENING = "bench listening on http://127.0.0.1:"


def serve(resource: Resource, description: str) -> None:
    """Listen on ``--port`` (0: any), print the URL, run the reactor until SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    args, _ = parser.parse_known_args()
    site = Site(resource, parsePOSTFormSubmission=False)
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    the_reactor: Any = reactor
    port = the_reactor.listenTCP(args.port, site, backlog=1024, interface="127.0.0.1")
    print(f"{LISTENING}{port.getHost().port}", flush=True)
    the_reactor.run()
