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
from stasis.search import search_text
from stasis.store._codec import decode, decode_request, encode, encode_request

__all__ = [
    "ENTRY_COLUMNS",
    "INFO_COLUMNS",
    "LAST_USED_SQL",
    "REQUEST_COLUMNS",
    "ROW_OVERHEAD_BYTES",
    "SIZE_SQL",
    "WRITTEN_COLUMNS",
    "entry_row",
    "row_to_entry",
    "row_to_info",
    "stored_size",
]

#: What a lookup reads, in the order :func:`row_to_entry` expects.
ENTRY_COLUMNS = (
    "key, namespace, provider, model, method, path, status, headers, body, "
    "input_tokens, output_tokens, total_tokens, created_at, expires_at, last_hit_at, hit_count, "
    "timeline, shared_key, sample"
)

#: What a lookup with the request reads: the stored request last.
REQUEST_COLUMNS = ENTRY_COLUMNS + ", request"
_REQUEST = 19

#: What a put writes, in the order of :func:`entry_row`: ``search_text`` is
#: written by every put and read only by a search (:mod:`stasis.search`).
WRITTEN_COLUMNS: Sequence[str] = (
    *(c.strip() for c in REQUEST_COLUMNS.split(",")),
    "search_text",
    "body_size",
    "stored_size",
)

#: What a listing reads, in the order :func:`row_to_info` expects: never the answer itself.
INFO_COLUMNS = (
    "key, status, created_at, method, path, provider, model, namespace, "
    "input_tokens, output_tokens, total_tokens, expires_at, last_hit_at, hit_count, body_size, "
    "shared_key, sample"
)

#: What one entry costs in the database file beyond its packed values, in
#: bytes: the row's other columns (two 32-byte keys, the path, the model,
#: numbers) and record header, about 145; its entries in the key, created_at,
#: expiry and last-used indexes, about 90; and the part of each page that the
#: B-trees leave unused, which grows with the rows (8 KiB pages hold a whole
#: number of them). Measured on SQLite: 230 a row for values packing to 0.4 KB,
#: 330 for 1.1 KB (the benchmark's chat call), 420 for 0.5 to 3 KB, 1.8 KB on
#: average. A fixed figure rather than each row's own: a bound on the size
#: needs a total the database keeps cheaply, and it is right within a tenth
#: for answers of a few KB. ``0005-policy.sql`` holds the same number.
ROW_OVERHEAD_BYTES = 320

#: An entry's stored size in SQL: the ``stored_size`` column, or, for a row
#: without one (written before schema version 5, or by another tool), the same
#: sum :func:`stored_size` makes, from the lengths of its values. The schema's
#: triggers (``0005-policy.sql``) spell the same expression out.
SIZE_SQL = (
    f"COALESCE(stored_size, {ROW_OVERHEAD_BYTES} + LENGTH(body) + LENGTH(headers) "
    "+ COALESCE(LENGTH(timeline), 0) + COALESCE(LENGTH(request), 0))"
)

#: When an entry was last used: its last hit, else its creation. Eviction
#: goes by it, through the ``entries_last_used`` index on exactly this expression.
LAST_USED_SQL = "COALESCE(last_hit_at, created_at)"


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


def _size(*values: bytes | None, text: str = "") -> int:
    # The search text is counted as what it takes in the file: UTF-8, uncompressed.
    text_size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return ROW_OVERHEAD_BYTES + text_size + sum(len(v) for v in values if v is not None)


def stored_size(entry: Entry) -> int:
    """
    What ``entry`` costs in the database, in bytes: its packed values and its
    search text, plus :data:`ROW_OVERHEAD_BYTES`. This compresses and parses,
    so keep it off the reactor.
    """
    return int(entry_row(entry)[-1])


def storable_text(text: str) -> str:
    """
    ``text`` as a database can hold it: a lone surrogate (JSON allows
    ``"\\ud800"`` in a model name) cannot be encoded as UTF-8, and is written as
    U+FFFD instead. Only for the columns that describe an entry (its model,
    namespace, path): the answer and the request are stored as bytes, exact.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def entry_row(entry: Entry) -> tuple[Any, ...]:
    """
    The :data:`WRITTEN_COLUMNS` of ``entry``; this compresses and reads the
    request and the answer for their text, so keep it off the reactor.
    """
    headers = b""  # the headers travel in the packed value
    body = encode(entry.headers, entry.body)
    timeline = _encode_timeline(entry.timeline)
    request = None if entry.request is None else encode_request(entry.request)
    text = search_text(entry)
    return (
        bytes.fromhex(entry.key),
        storable_text(entry.namespace),
        storable_text(entry.provider),
        None if entry.model is None else storable_text(entry.model),
        storable_text(entry.method),
        storable_text(entry.path),
        entry.status,
        headers,
        body,
        entry.usage.input,
        entry.usage.output,
        entry.usage.total,
        entry.created_at,
        entry.expires_at,
        entry.last_hit_at,
        entry.hit_count,
        timeline,
        bytes.fromhex(entry.shared_key) if entry.shared_key else None,
        entry.sample,
        request,
        text,
        len(entry.body),
        _size(headers, body, timeline, request, text=text),
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
        sample=row[18],
        request=(
            decode_request(row[_REQUEST])
            if len(row) > _REQUEST and row[_REQUEST] is not None
            else None
        ),
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
        sample=row[16],
    )
