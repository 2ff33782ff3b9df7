"""
Which headers cross the proxy, in each direction, and which are kept with an entry.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and never cross;
``X-Stasis-*`` headers are instructions to stasis; framing headers are
recomputed because the body may be decoded on the way.

Headers travel through stasis as raw ``(name, value)`` byte pairs in the order
they came, as twisted.web and treq hand them over; nothing here imports either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "Pairs",
    "content_coding",
    "for_client",
    "for_export",
    "for_storage",
    "for_upstream",
    "header_map",
    "joined",
]

#: Raw header fields as (name, value) pairs, in the order they came.
Pairs = Sequence[tuple[bytes, bytes]]

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

#: Not relayed to the client: the body it gets is re-framed (and maybe decoded);
#: and a cookie: an upstream's (Cloudflare's ``__cf_bm`` on every OpenAI answer)
#: would come back on the client's next request, and a Cookie is a credential,
#: fingerprinted into the key: the repeat would miss. A hit never sets one either.
_NOT_RELAYED = _HOP_BY_HOP | {b"content-length", b"set-cookie", b"set-cookie2"}

#: Not kept with an entry: they describe one moment or one client, not the answer.
_NOT_STORED = _NOT_RELAYED | {b"date", b"age"}


#: Headers that carry a credential, in either direction.
_CREDENTIALS = frozenset(
    {
        b"authorization",
        b"proxy-authorization",
        b"x-api-key",
        b"api-key",
        b"x-goog-api-key",
        b"x-amz-security-token",
        b"ocp-apim-subscription-key",
        b"cookie",
        b"set-cookie",
        b"set-cookie2",
    }
)

#: Parts of a name that mark a credential wherever they appear in it (an API
#: gateway's ``x-portkey-api-key``, a ``x-goog-iap-jwt-assertion``...). Not
#: ``token`` alone: Bedrock's ``x-amzn-bedrock-input-token-count`` is usage.
_CREDENTIAL_WORDS = (
    b"authorization",
    b"api-key",
    b"apikey",
    b"access-token",
    b"auth-token",
    b"id-token",
    b"security-token",
    b"session-token",
    b"subscription-key",
    b"jwt",
    b"secret",
    b"password",
    b"cookie",
)

#: Headers that name the account, organisation or project a call was billed to.
_ACCOUNT = frozenset(
    {
        b"openai-organization",
        b"openai-project",
        b"anthropic-organization-id",
        b"x-goog-user-project",
        b"x-ms-client-principal-id",
        b"x-ms-client-principal-name",
    }
)

#: Headers that identify one call or its route through a provider's network:
#: they change on every call (noise in a diff) and let the provider tie the
#: recording to the account that made it.
_CALL_IDS = frozenset(
    {
        b"cf-ray",
        b"x-amz-cf-id",
        b"x-amz-id-2",
        b"x-cloud-trace-context",
        b"traceparent",
        b"tracestate",
        b"x-guploader-uploadid",
    }
)

#: Name endings of per-call identifiers: ``x-request-id``, ``request-id``,
#: ``x-amzn-requestid``, ``apim-request-id``, ``x-ms-client-request-id``,
#: ``x-amzn-trace-id``, ``x-correlation-id``...
_CALL_ID_ENDINGS = (b"request-id", b"requestid", b"trace-id", b"traceid", b"correlation-id")


def _exported(lower: bytes) -> bool:
    return not (
        lower in _CREDENTIALS
        or lower in _ACCOUNT
        or lower in _CALL_IDS
        or any(word in lower for word in _CREDENTIAL_WORDS)
        or lower.endswith(_CALL_ID_ENDINGS)
    )


def joined(pairs: Pairs, name: bytes) -> bytes:
    """Every value of the (lower-case) ``name``, joined by commas as RFC 9110 allows."""
    return b", ".join(value for field, value in pairs if field.lower() == name)


def header_map(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers by lower-case name as text (latin-1, byte for byte), repeated values joined."""
    grouped: dict[str, str] = {}
    for name, value in pairs:
        lower = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        grouped[lower] = f"{grouped[lower]}, {text}" if lower in grouped else text
    return grouped


def _connection_tokens(pairs: Pairs) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in pairs:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    return tokens


def content_coding(pairs: Pairs) -> bytes:
    """
    The content coding still applied to a response body, or ``b""`` for none.

    twisted.web's ContentDecoderAgent leaves an *empty* Content-Encoding header
    on responses that were never encoded, so emptiness means identity.
    """
    coding = (
        b",".join(value for name, value in pairs if name.lower() == b"content-encoding")
        .strip()
        .lower()
    )
    return b"" if coding == b"identity" else coding


def _filtered(pairs: Pairs, dropped: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    named = _connection_tokens(pairs)
    return [
        (name, value)
        for name, value in pairs
        if (lower := name.lower()) not in dropped
        and lower not in named
        and not lower.startswith(b"x-stasis-")
        and (value.strip() or lower != b"content-encoding")
    ]


def for_upstream(pairs: Pairs) -> list[tuple[bytes, bytes]]:
    """The client's request headers as they go to the upstream."""
    return _filtered(pairs, _NOT_FORWARDED)


def for_client(pairs: Pairs) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as they go to the client."""
    return _filtered(pairs, _NOT_RELAYED)


def for_storage(pairs: Pairs) -> tuple[tuple[bytes, bytes], ...]:
    """The upstream's response headers as a hit will replay them."""
    return tuple(_filtered(pairs, _NOT_STORED))


def for_export(pairs: Pairs) -> tuple[tuple[bytes, bytes], ...]:
    """
    Headers as a cassette may show them: no credential, no account, no call id.

    Cassettes are committed to git and shared, so whatever identifies a person
    or an account goes, in requests and responses alike, even where stasis
    never stores it (a credential, a cookie): the rule does not rely on what
    was stored before it. What a hit needs (the content type, the provider's
    usage and rate-limit headers) stays.
    """
    return tuple((name, value) for name, value in pairs if _exported(name.lower()))
