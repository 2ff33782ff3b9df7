"""
One entry as one JSON document, and back: pure functions, no I/O.

The document says what was asked and what was answered, readably (bodies as
JSON, streams as events) and exactly (a hit replays the recorded bytes), and
nothing that changes with use (hits) or that identifies a person or an
account (see :mod:`~stasis.cassettes._redact`). Its fields come in a fixed
order, so the same entry always gives the same document. docs/cassettes.md
describes it field by field.
"""

from __future__ import annotations

import re
from typing import Any

from stasis.cassettes._bodies import bytes_fields, read_bytes
from stasis.cassettes._fields import Fields
from stasis.cassettes._format import FORMAT_VERSION, READABLE_VERSIONS, CassetteError
from stasis.cassettes._redact import exported_query, exported_request_headers
from stasis.cassettes._streams import UINT32_MAX, read_events, stream_events, stream_kind
from stasis.headers import for_export, joined
from stasis.ignore import parse_ignore
from stasis.keys import WHOLE_KEY
from stasis.model import Entry, StoredRequest, Timeline, TokenUsage
from stasis.modes import MAX_SAMPLES
from stasis.times import format_time, parse_time

__all__ = ["entry_document", "entry_from_document"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: CR, LF and NUL would split a head on replay; past U+00FF is no latin-1 byte.
_BAD_VALUE = re.compile(r"[\r\n\0]|[^\x00-\xff]")


def _request_document(request: StoredRequest) -> dict[str, Any]:
    ignored = {"ignored": list(request.ignored)} if request.ignored else {}
    return {
        "query": exported_query(request.query),
        "headers": exported_request_headers(request.headers),
        **ignored,
        **bytes_fields(request.body, "body", loose=True),
    }


def _response_document(entry: Entry) -> dict[str, Any]:
    document: dict[str, Any] = {
        "status": entry.status,
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in for_export(entry.headers)
        ],
    }
    kind = stream_kind(joined(entry.headers, b"content-type"))
    stream = None if kind is None else stream_events(entry.body, entry.timeline, kind)
    if stream is None:
        document.update(bytes_fields(entry.body, "body"))
    else:
        document["events"] = stream[0]
    if entry.timeline is not None and not (stream is not None and stream[1]):
        document["timeline"] = [[offset, ms] for offset, ms in entry.timeline]
    return document


def entry_document(entry: Entry) -> dict[str, Any]:
    """
    ``entry`` as its cassette document, under its portable key.

    Hit counts and the last hit's time are left out: they change with use,
    and a cassette must change only when an answer does. A sample number of
    0 and an empty list of ignore rules are left out too, so an entry
    without them is written as it was before they existed.
    """
    usage = entry.usage
    return {
        "stasis": FORMAT_VERSION,
        "key": entry.portable_key,
        **({"sample": entry.sample} if entry.sample else {}),
        "created_at": format_time(entry.created_at),
        "expires_at": None if entry.expires_at is None else format_time(entry.expires_at),
        "namespace": entry.namespace,
        "provider": entry.provider,
        "model": entry.model,
        "method": entry.method,
        "path": entry.path,
        "usage": {"input": usage.input, "output": usage.output, "total": usage.total},
        "request": None if entry.request is None else _request_document(entry.request),
        "response": _response_document(entry),
    }


def _time(fields: Fields, name: str, text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as error:
        raise fields.error(name, str(error)) from error


def _pairs(fields: Fields, name: str, *, lower: bool) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for index, pair in enumerate(fields.array(name)):
        place = f"{name}[{index}]"
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
        ):
            raise fields.error(place, "expected a [name, value] pair of strings")
        field_name, value = pair
        if not _TOKEN.match(field_name) or (lower and field_name != field_name.lower()):
            case = "a lower-case" if lower else "an"
            raise fields.error(place, f"{field_name!r} is not {case} HTTP header name")
        if _BAD_VALUE.search(value):
            raise fields.error(place, "a header value holds CR, LF, NUL or a non-latin-1 character")
        pairs.append((field_name, value))
    return pairs


def _read_ignored(fields: Fields) -> tuple[str, ...]:
    """The ignore rules, each one that parses (the key is made again with them)."""
    if not fields.has("ignored"):
        return ()
    texts: list[str] = []
    for index, text in enumerate(fields.array("ignored")):
        place = f"ignored[{index}]"
        if not isinstance(text, str):
            raise fields.error(place, "expected a JSON path as a string")
        try:
            texts.append(parse_ignore(text).text)
        except ValueError as error:
            raise fields.error(place, str(error)) from error
    return tuple(texts)


def _read_request(fields: Fields) -> StoredRequest:
    # A cassette may have been written by hand: the same rules as an export,
    # so that no credential reaches the database through one.
    headers = exported_request_headers(tuple(_pairs(fields, "headers", lower=True)))
    request = StoredRequest(
        query=exported_query(fields.text("query")),
        headers=tuple((name, value) for name, value in headers),
        body=read_bytes(fields, "body"),
        ignored=_read_ignored(fields),
    )
    fields.done()
    return request


def _read_timeline(fields: Fields) -> Timeline:
    timeline: list[tuple[int, int]] = []
    for index, pair in enumerate(fields.array("timeline")):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(type(n) is int and 0 <= n <= UINT32_MAX for n in pair)
        ):
            raise fields.error(f"timeline[{index}]", "expected [offset, ms], two whole numbers")
        timeline.append((pair[0], pair[1]))
    return tuple(timeline)


def _read_response(
    fields: Fields,
) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes, Timeline | None]:
    status = fields.integer("status", 100, 999)
    headers = for_export(
        tuple(
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in _pairs(fields, "headers", lower=False)
        )
    )
    timeline: Timeline | None = None
    if fields.has("events"):
        kind = stream_kind(joined(headers, b"content-type"))
        if kind is None:
            raise fields.error("events", "given for an answer whose content-type is not a stream")
        body, timeline = read_events(fields, kind)
    else:
        body = read_bytes(fields, "body")
    if fields.has("timeline"):
        if timeline is not None:
            raise fields.error("timeline", "given as well as the events' ms")
        timeline = _read_timeline(fields)
    fields.done()
    return status, headers, body, timeline


def _version(fields: Fields) -> None:
    if not fields.has("stasis"):
        raise CassetteError(fields.where, 'not a stasis cassette entry (no "stasis" field)')
    version = fields.value("stasis")
    if version not in READABLE_VERSIONS or type(version) is not int:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise fields.error(
            "stasis", f"format version {version!r} is not one this stasis reads ({readable})"
        )


def entry_from_document(document: Any, where: str) -> Entry:
    """
    The entry a cassette document describes, stored in the shared scope under its key.

    ``where`` (``PATH:LINE``) names the document in a :class:`CassetteError`.
    The entry has no hits yet.
    """
    fields = Fields.of(document, where)
    _version(fields)
    key = fields.text("key")
    if not WHOLE_KEY.fullmatch(key):
        raise fields.error("key", f"expected 64 lower-case hex digits, got {key!r}")
    sample = fields.optional_integer("sample", 0, MAX_SAMPLES - 1) or 0
    created_at = _time(fields, "created_at", fields.text("created_at"))
    expires = fields.text_or_null("expires_at")
    usage = fields.object("usage")
    usage_value = TokenUsage(
        input=usage.integer("input"), output=usage.integer("output"), total=usage.integer("total")
    )
    usage.done()
    request = None if fields.value("request") is None else _read_request(fields.object("request"))
    status, headers, body, timeline = _read_response(fields.object("response"))
    method = fields.text("method")
    if not _TOKEN.match(method):
        raise fields.error("method", f"{method!r} is not an HTTP method")
    entry = Entry(
        key=key,
        shared_key=key,
        status=status,
        headers=headers,
        body=body,
        created_at=created_at,
        expires_at=None if expires is None else _time(fields, "expires_at", expires),
        method=method,
        path=fields.text("path"),
        provider=fields.text("provider"),
        model=fields.text_or_null("model"),
        namespace=fields.text("namespace"),
        usage=usage_value,
        timeline=timeline,
        request=request,
        sample=sample,
    )
    fields.done()
    return entry
