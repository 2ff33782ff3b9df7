"""
Which headers cross the proxy, in each direction, and which are kept with an entry.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and never cross;
``X-Stasis-*`` headers are instructions to stasis; framing headers are
recomputed because the body may be decoded on the way.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

__all__ = [
    "for_client",
    "for_storage",
    "for_upstream",
]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Never forwarded upstream: the Agent sets Host, Content-Length and
#: Accept-Encoding itself (gzip, which it decodes).
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"content-length", b"accept-encoding", b"expect"}

#: Not relayed to the client: the body it gets is re-framed (and maybe decoded).
_NOT_RELAYED = _HOP_BY_HOP | {b"content-length"}

#: Not kept with an entry: they describe one moment or one client, not the answer.
_NOT_STORED = _NOT_RELAYED | {b"date", b"set-cookie", b"age"}


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", []):
        tokens.update(token.strip().lower() for token in value.split(b","))
    return tokens


def content_coding(headers: Headers) -> bytes:
    """
    The content coding still applied to a response body, or ``b""`` for none.

    twisted.web's ContentDecoderAgent leaves an *empty* Content-Encoding header
    on responses that were never encoded, so emptiness means identity.
    """
    coding = b",".join(headers.getRawHeaders(b"content-encoding", [])).strip().lower()
    return b"" if coding == b"identity" else coding


def _filtered(headers: Headers, dropped: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    named = _connection_tokens(headers)
    return [
        (name, value)
        for name, values in headers.getAllRawHeaders()
        if (lower := name.lower()) not in dropped
        and lower not in named
        and not lower.startswith(b"x-stasis-")
        for value in values
        if value.strip() or lower != b"content-encoding"
    ]


def for_upstream(headers: Headers) -> Headers:
    """The client's request headers as they go to the upstream."""
    forwarded = Headers()
    for name, value in _filtered(headers, _NOT_FORWARDED):
        forwarded.addRawHeader(name, value)
    return forwarded


def for_client(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as they go to the client."""
    return _filtered(headers, _NOT_RELAYED)


def for_storage(headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """The upstream's response headers as a hit will replay them."""
    return tuple(_filtered(headers, _NOT_STORED))
