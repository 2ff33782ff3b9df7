"""
Listings in SQL: a filter as a WHERE clause, and paging by cursor.

Entries are listed newest first, ordered by ``(created_at, key)`` descending:
the key breaks ties, so the order is total and a page can begin exactly after
the last row of the one before. The cursor names that row, not a count of
rows to skip, so a page deep in a large cache costs what the first one does,
and entries stored or removed between two pages neither repeat a row nor skip
one (an entry newer than the cursor is simply not in the rest of the listing).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from typing import Any

from stasis.model import EntryFilter, Page
from stasis.search import searchable
from stasis.store._protocol import BadCursor
from stasis.store._rows import INFO_COLUMNS, row_to_info

__all__ = ["decode_cursor", "encode_cursor", "filter_sql", "page", "page_query", "where_sql"]

_CREATED_AT = struct.Struct(">d")


def encode_cursor(created_at: float, key: bytes) -> str:
    """An opaque, URL-safe token for the row ``(created_at, key)``."""
    raw = _CREATED_AT.pack(created_at) + key
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, bytes]:
    """The row a cursor names; :class:`BadCursor` if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as e:
        raise BadCursor(f"not a listing cursor: {cursor!r}") from e
    if len(raw) <= _CREATED_AT.size:
        raise BadCursor(f"not a listing cursor: {cursor!r}")
    (created_at,) = _CREATED_AT.unpack_from(raw)
    if math.isnan(created_at):
        raise BadCursor(f"not a listing cursor: {cursor!r}")
    return created_at, raw[_CREATED_AT.size :]


def filter_sql(where: EntryFilter, param: str, find: str) -> tuple[list[str], list[Any]]:
    """
    The conditions (to be joined with AND) and their parameters for ``where``;
    ``find`` is the engine's function giving where a string is in another
    (``instr``, ``strpos``: :attr:`Dialect.find <stasis.store._dialect.Dialect.find>`).
    """
    conditions: list[str] = []
    parameters: list[Any] = []
    for column, value in (
        ("provider", where.provider),
        ("model", where.model),
        ("namespace", where.namespace),
        ("path", where.path),
    ):
        if value is not None:
            conditions.append(f"{column} = {param}")
            parameters.append(value)
    if where.since is not None:
        conditions.append(f"created_at >= {param}")
        parameters.append(where.since)
    if where.until is not None:
        conditions.append(f"created_at < {param}")
        parameters.append(where.until)
    if where.text:
        # NULL (an entry stored before version 7, not yet filled in) finds nothing.
        conditions.append(f"{find}(search_text, {param}) > 0")
        parameters.append(searchable(where.text))
    return conditions, parameters


def where_sql(where: EntryFilter, param: str, find: str) -> tuple[str, list[Any]]:
    """``where`` as a WHERE clause (empty for every entry) and its parameters."""
    conditions, parameters = filter_sql(where, param, find)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), parameters


def page_query(
    where: EntryFilter, limit: int, cursor: str | None, param: str, find: str
) -> tuple[str, list[Any]]:
    """
    The SELECT for one page: ``limit + 1`` rows, the extra one only telling
    whether there is a next page.
    """
    conditions, parameters = filter_sql(where, param, find)
    if cursor is not None:
        created_at, key = decode_cursor(cursor)
        # The first condition alone bounds the created_at index's range scan.
        conditions.append(f"created_at <= {param} AND (created_at < {param} OR key < {param})")
        parameters += [created_at, created_at, key]
    clause = " WHERE " + " AND ".join(conditions) if conditions else ""
    parameters.append(max(limit, 0) + 1)
    query = (
        f"SELECT {INFO_COLUMNS} FROM entries{clause} "
        f"ORDER BY created_at DESC, key DESC LIMIT {param}"
    )
    return query, parameters


def page(rows: Sequence[Sequence[Any]], limit: int) -> Page:
    """The page that ``rows`` (as :func:`page_query` selected them) make."""
    shown = rows[: max(limit, 0)]
    if len(rows) <= len(shown) or not shown:
        return Page(tuple(row_to_info(row) for row in shown))
    last = shown[-1]
    return Page(tuple(row_to_info(row) for row in shown), encode_cursor(last[2], bytes(last[0])))
