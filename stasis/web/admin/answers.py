"""
How every answer under ``/_stasis/api/`` is written: JSON, never cached, never
sniffed as something else, never framed, and never allowed to load anything.

What the API returns came from clients and models (prompts, answers) and is
hostile by assumption: a browser opening an answer directly must see JSON
text, not a page that runs a stored ``<script>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from attrs import frozen
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.errors import StasisError
from stasis.web.site import write_error

__all__ = ["API_HEADERS", "Encoded", "ErrorResource", "send_error", "send_json", "set_headers"]

#: What every API answer carries.
API_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)


def set_headers(request: Request, headers: Iterable[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        request.setHeader(name, value)


@frozen
class Encoded:
    """A document already encoded as JSON (off the reactor, when it is large)."""

    body: bytes


def send_json(request: Request, document: Any, status: int = 200) -> None:
    """Answer ``request`` with ``document`` (or its :class:`Encoded` JSON) and finish it."""
    body = document.body if isinstance(document, Encoded) else json.dumps(document).encode()
    request.setResponseCode(status)
    set_headers(request, API_HEADERS)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def send_error(
    request: Request, error: StasisError, headers: Iterable[tuple[bytes, bytes]] = API_HEADERS
) -> None:
    """
    Answer ``request`` with ``error`` as every stasis error is written, with
    ``headers`` besides (the API's, or the web UI's pages'), and finish it.
    """
    set_headers(request, headers)
    write_error(request, error)


class ErrorResource(Resource):
    """Answers every request with one error (an access refusal, a 404), as :func:`send_error`."""

    isLeaf = True

    def __init__(
        self, error: StasisError, headers: Iterable[tuple[bytes, bytes]] = API_HEADERS
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.error = error
        self.headers = tuple(headers)

    def render(self, request: Request) -> object:
        send_error(request, self.error, self.headers)
        return NOT_DONE_YET
