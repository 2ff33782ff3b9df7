"""
Entries as rows of the ``entries`` table, and back: the same on every SQL engine.

The answer (headers and body) is packed by :mod:`stasis.store._codec`; a
stream's timeline is packed here. Both run wherever the row is made or read,
which in the store is a database thread, so that compressing never costs the
reactor thread.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Sequence
from typing import Any

from stasis.model import Entry, EntryInfo, Timeline, TokenUsage
from stasis.store._codec import decode, decode_request, encode, encode_request

__all__ = [
    "ENTRY_COLUMNS",
    "INFO_COLUMNS",
    "REQUEST_COLUMNS",
    "WRITTEN_COLUMNS",
    "entry_row",
    "row_to_entry",
    "row_to_info",
]

#: What a lookup reads, in the order :func:`row_to_entry` expects.
ENTRY_COLUMNS = (
    "key, namespace, provider, model, method, path, status, headers, body, "
    "input_tokens, output_tokens, total_tokens, created_at, expires_at, last_hit_at, hit_count, "
    "timeline, shared_key"
)

#: What a lookup with the request reads: the stored request last.
REQUEST_COLUMNS = ENTRY_COLUMNS + ", request"

#: What a put writes, in the order of :func:`entry_row`.
WRITTEN_COLUMNS: Sequence[str] = (
    *(c.strip() for c in REQUEST_COLUMNS.split(",")),
    "body_size",
)

#: What a listing reads, in the order :func:`row_to_info` expects: never the answer itself.
INFO_COLUMNS = (
    "key, status, created_at, method, path, provider, model, namespace, "
    "input_tokens, output_tokens, total_tokens, expires_at, last_hit_at, hit_count, body_size, "
    "shared_key"
)


def _encode_timeline(timeline: Timeline | None) -> bytes | None:
    """Eight bytes an event (two unsigned 32-bit ints), compressed: streams have thousands."""
    if timeline is None:
        return None
    flat = array("I", [number for pair in timeline for number in pair])
    if sys.byteorder == "big":  # pragma: no cover
        flat.byteswap()
    return zlib.compress(flat.tobytes())


def _decode_timeline(raw: bytes | None) -> Timeline | None:
    if raw is None:
        return None
    flat = array("I")
    flat.frombytes(zlib.decompress(raw))
    if sys.byteorder == "big":  # pragma: no cover
        flat.byteswap()
    return tuple(zip(flat[0::2], flat[1::2], strict=True))


def entry_row(entry: Entry) -> tuple[Any, ...]:
    """The :data:`WRITTEN_COLUMNS` of ``entry``; this compresses, so keep it off the reactor."""
    return (
        bytes.fromhex(entry.key),
        entry.namespace,
        entry.provider,
        entry.model,
        entry.method,
        entry.path,
        entry.status,
        b"",  # the headers travel in the packed value
        encode(entry.headers, entry.body),
        entry.usage.input,
        entry.usage.output,
        entry.usage.total,
        entry.created_at,
        entry.expires_at,
        entry.last_hit_at,
        entry.hit_count,
        _encode_timeline(entry.timeline),
        bytes.fromhex(entry.shared_key) if entry.shared_key else None,
        None if entry.request is None else encode_request(entry.request),
        len(entry.body),
    )


def _hex(value: Any) -> str:
    return "" if value is None else bytes(value).hex()


def row_to_entry(row: Sequence[Any]) -> Entry:
    """The entry in a row of :data:`ENTRY_COLUMNS` (or :data:`REQUEST_COLUMNS`)."""
    headers, body = decode(row[8], row[7])
    return Entry(
        key=bytes(row[0]).hex(),
        namespace=row[1],
        provider=row[2],
        model=row[3],
        method=row[4],
        path=row[5],
        status=row[6],
        headers=headers,
        body=body,
        usage=TokenUsage(input=row[9], output=row[10], total=row[11]),
        created_at=row[12],
        expires_at=row[13],
        last_hit_at=row[14],
        hit_count=row[15],
        timeline=_decode_timeline(row[16]),
        shared_key=_hex(row[17]),
        request=decode_request(row[18]) if len(row) > 18 and row[18] is not None else None,
    )


def row_to_info(row: Sequence[Any]) -> EntryInfo:
    """The facts in a row of :data:`INFO_COLUMNS`."""
    return EntryInfo(
        key=bytes(row[0]).hex(),
        status=row[1],
        created_at=row[2],
        method=row[3],
        path=row[4],
        provider=row[5],
        model=row[6],
        namespace=row[7],
        usage=TokenUsage(input=row[8], output=row[9], total=row[10]),
        expires_at=row[11],
        last_hit_at=row[12],
        hit_count=row[13],
        size=row[14],
        shared_key=_hex(row[15]),
    )
