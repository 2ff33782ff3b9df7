"""
Entries as JSON for scripts (``ls --json``, ``show --json``) and the admin API
(``/_stasis/api/entries``): full keys, ISO-8601 UTC times, camelCase names as
``/stats`` has them. One module for both, so the CLI and the API never differ.

A body is given as its JSON value when it is JSON, as text when it is UTF-8,
else in base64; ``bodyEncoding`` says which, so a script never has to guess
whether ``"body": "…"`` is a JSON string or a text.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from stasis.model import Entry, EntryInfo, StoredRequest
from stasis.streams.recorded import recorded_events, stream_text
from stasis.times import iso8601

__all__ = ["body_json", "entry_json", "headers_json", "info_json", "is_json", "parse_json"]

_NOT_JSON = object()


def parse_json(body: bytes) -> Any:
    """``body`` parsed, or :data:`_NOT_JSON` when it is not a JSON document."""
    if not body.strip():
        return _NOT_JSON
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def is_json(value: Any) -> bool:
    return value is not _NOT_JSON


def info_json(info: EntryInfo) -> dict[str, Any]:
    """
    What a listing says of one entry; ``sample`` only for a key's second
    answer on, so that entries without samples read as they always did.
    """
    return {
        "key": info.key,
        "sharedKey": info.shared_key or None,
        **({"sample": info.sample} if info.sample else {}),
        "storedAt": iso8601(info.created_at),
        "expiresAt": iso8601(info.expires_at),
        "provider": info.provider,
        "model": info.model,
        "namespace": info.namespace,
        "method": info.method,
        "path": info.path,
        "status": info.status,
        "inputTokens": info.usage.input,
        "outputTokens": info.usage.output,
        "totalTokens": info.usage.total,
        "hits": info.hit_count,
        "lastHitAt": iso8601(info.last_hit_at),
        "sizeBytes": info.size,
    }


def body_json(body: bytes, *, parse: bool = True) -> dict[str, Any]:
    """``{"body": …, "bodyEncoding": "json" | "text" | "base64"}``."""
    if parse:
        document = parse_json(body)
        if is_json(document):
            return {"body": document, "bodyEncoding": "json"}
    try:
        return {"body": body.decode("utf-8"), "bodyEncoding": "text"}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "bodyEncoding": "base64"}


def headers_json(headers: Any) -> list[list[str]]:
    """Header pairs in order, duplicates kept; bytes read as Latin-1, as HTTP has them."""
    return [
        [
            name.decode("latin-1") if isinstance(name, bytes) else name,
            value.decode("latin-1") if isinstance(value, bytes) else value,
        ]
        for name, value in headers
    ]


def _request_json(entry: Entry, request: StoredRequest | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {
        "method": entry.method,
        "path": entry.path,
        "query": request.query,
        "headers": headers_json(request.headers),
        "ignored": list(request.ignored),
        **body_json(request.body),
    }


def entry_json(entry: Entry) -> dict[str, Any]:
    """``show --json``: what ``ls --json`` says of the entry, its request and its answer."""
    events = recorded_events(entry)
    response: dict[str, Any] = {
        "status": entry.status,
        "headers": headers_json(entry.headers),
        **body_json(entry.body, parse=events is None),
        "stream": events is not None,
        "text": None if events is None else stream_text(entry, events),
        "events": None
        if events is None
        else [
            {
                "name": None if e.event is None else e.event.name,
                "data": None if e.event is None else e.event.data,
                "atMs": e.at_ms,
            }
            for e in events
        ],
    }
    return {
        **info_json(EntryInfo.of(entry)),
        "request": _request_json(entry, entry.request),
        "response": response,
    }
