"""
Giving the entries stored before schema version 7 their search text.

A put writes an entry's search text (:mod:`stasis.search`); the entries
already in a database migrated to version 7 have none (NULL), and a search
would not find them. The store fills them in after it opens the database, a
batch at a time: the batch is read, and its texts worked out (decompressing
and parsing each answer and request), on a reader's connection, outside any
transaction; then one short write transaction stores them, queued behind the
writes asked for meanwhile like any other, so a put waits for one batch of
updates at most. An entry replaced meanwhile has its text from its put, and
keeps it (``search_text IS NULL`` in the update).

The batches go through the ``entries_unsearchable`` index, in key order: a
database whose entries all have their text costs one empty index lookup.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from stasis.search import search_text, searchable
from stasis.store._rows import REQUEST_COLUMNS, row_to_entry

__all__ = ["BATCH", "Unsearchable", "fill_sql", "unsearchable_batch"]

#: Entries given their search text by one transaction at most.
BATCH = 200


@frozen
class Unsearchable:
    """One batch of entries without their search text, with the texts they are to have."""

    #: (text, key) for each, as :func:`fill_sql` takes them.
    texts: list[tuple[str, bytes]]
    #: The last key read: the next batch begins after it. None: there are no more.
    after: bytes | None


def _text_of(row: Any) -> str:
    try:
        return search_text(row_to_entry(row))
    except Exception:  # a row another tool wrote, or a damaged one: its model alone
        model = row[3]
        return searchable(model) if isinstance(model, str) else ""


def unsearchable_batch(cursor: Any, param: str, after: bytes, limit: int = BATCH) -> Unsearchable:
    """The next ``limit`` entries after the key ``after`` that have no search text."""
    cursor.execute(
        f"SELECT {REQUEST_COLUMNS} FROM entries WHERE search_text IS NULL AND key > {param} "
        f"ORDER BY key LIMIT {param}",
        (after, limit),
    )
    rows = cursor.fetchall()
    texts = [(_text_of(row), bytes(row[0])) for row in rows]
    return Unsearchable(texts, bytes(rows[-1][0]) if len(rows) == limit else None)


def fill_sql(param: str) -> str:
    """Store one entry's search text, unless a put gave it one meanwhile."""
    return f"UPDATE entries SET search_text = {param} WHERE key = {param} AND search_text IS NULL"
