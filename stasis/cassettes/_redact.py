"""
What of a request may leave the machine in a cassette: no credential, no account.

Headers follow :func:`stasis.headers.for_export`. A stored query has had its
credential parameter taken out already (Gemini's ``key=``), but a cassette is
committed to git, so the parameters that carry credentials are taken out
again here, whatever stored them: the rule must not rely on the recorder.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from stasis.headers import for_export

__all__ = ["exported_query", "exported_request_headers"]

#: Query parameters (compared in lower case) that carry a credential.
_CREDENTIAL_PARAMETERS = frozenset(
    {
        "key",
        "api_key",
        "api-key",
        "apikey",
        "access_token",
        "token",
        "x-goog-api-key",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "sig",
    }
)


def exported_query(query: str) -> str:
    """``query`` without its credential parameters; the others as they were, in order."""
    if not query:
        return query
    kept = [
        part
        for part in query.split("&")
        if unquote_plus(part.partition("=")[0]).lower() not in _CREDENTIAL_PARAMETERS
    ]
    return "&".join(kept)


def exported_request_headers(headers: tuple[tuple[str, str], ...]) -> list[list[str]]:
    """A stored request's headers (latin-1 text) as a cassette shows them."""
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return [[name.decode("latin-1"), value.decode("latin-1")] for name, value in for_export(raw)]
