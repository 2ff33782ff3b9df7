"""
Filling a cache database with many entries, fast, as stasis itself would have.

Recording a million answers through the daemon would take hours; instead one
real entry is recorded through stasis (so the schema, the columns and the
measured request's key are genuine) and then copied, with a fresh random
32-byte key, a different answer (packed by stasis's own store codec, with
the recorded headers) and its own ``created_at`` per row, in a single
transaction. Every other column is copied as stasis
wrote it, whatever the schema version. The daemon must be stopped
meanwhile: the journal is switched out of WAL for the bulk load and stasis
switches it back when it opens the file.

From schema version 3 on, triggers log every insert to the ``changes`` table,
for other processes' in-memory layers. Nobody has the database open while it
is filled, and a million log rows would only inflate the file the benchmark
measures (deleted rows leave free pages behind), so the load runs with the
triggers dropped, in the same transaction that puts them back and empties the
log; the daemon that opens the file next starts from there.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.payloads import completion
from stasis.model import Entry
from stasis.search import search_text
from stasis.store._codec import decode, decode_request, encode

__all__ = ["column_sizes", "populate", "template_row"]

_BATCH = 50_000
_DISTINCT_BODIES = 1024
#: Columns given per row; every other column is the recorded entry's. The
#: search text (schema version 7 on) is the copy's own too, when there is one.
_VARIED = ("key", "body", "body_size", "created_at")
_SEARCH_TEXT = "search_text"
_RESET = {"hit_count": 0, "last_hit_at": None}


def template_row(db: Path) -> dict[str, Any]:
    """The recorded entry, column by column: the row every copy is made from."""
    with closing(sqlite3.connect(db)) as connection:
        cursor = connection.execute("SELECT * FROM entries LIMIT 1")
        row = cursor.fetchone()
        names = [column[0] for column in cursor.description]
    if row is None:
        raise ValueError(f"{db} holds no entry to copy")
    return {**dict(zip(names, row, strict=True)), **_RESET}


def _varied(template: dict[str, Any]) -> tuple[str, ...]:
    return (*_VARIED, _SEARCH_TEXT) if _SEARCH_TEXT in template else _VARIED


def _search_text(template: dict[str, Any], headers: Any, raw: bytes) -> str:
    """The search text a copy answering ``raw`` has: as a put of it would write it."""
    request = template.get("request")
    entry = Entry(
        key="00" * 32,
        status=template["status"],
        headers=headers,
        body=raw,
        created_at=template["created_at"],
        provider=template["provider"],
        model=template["model"],
        request=None if request is None else decode_request(request),
    )
    return search_text(entry)


def _rows(
    template: dict[str, Any], names: list[str], count: int, rng: random.Random, seed: int
) -> Iterator[tuple[Any, ...]]:
    headers, _ = decode(template["body"], template["headers"])
    searched = _SEARCH_TEXT in template
    bodies = []
    for i in range(_DISTINCT_BODIES):
        raw = completion(seed * _DISTINCT_BODIES + i)
        text = (_search_text(template, headers, raw),) if searched else ()
        bodies.append((encode(headers, raw), len(raw), text))
    fixed = tuple(template[name] for name in names)
    created_at = template["created_at"]
    for start in range(0, count, _BATCH):
        # Sorted keys fill the key index in order: the same tree, built faster.
        keys = sorted(rng.randbytes(32) for _ in range(min(_BATCH, count - start)))
        for i, key in enumerate(keys):
            body, size, text = bodies[(start + i) % _DISTINCT_BODIES]
            yield (key, body, size, created_at - (start + i + 1) * 1e-3, *text, *fixed)


def populate(db: Path, template: dict[str, Any], count: int, seed: int) -> None:
    """Add ``count`` entries like ``template`` to ``db``, with new keys and bodies."""
    varied = _varied(template)
    names = [name for name in template if name not in varied]
    columns = ", ".join((*varied, *names))
    marks = ", ".join("?" * (len(varied) + len(names)))
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        connection.execute("BEGIN IMMEDIATE")
        triggers = _drop_triggers(connection)
        connection.executemany(
            f"INSERT INTO entries ({columns}) VALUES ({marks})",
            _rows(template, names, count, random.Random(seed), seed),
        )
        for statement in triggers:
            connection.execute(statement)
        _clear_change_log(connection)
        connection.execute("COMMIT")
    finally:
        connection.close()


def _drop_triggers(connection: sqlite3.Connection) -> list[str]:
    """Drop the triggers on ``entries``; the statements that make them again."""
    triggers = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'entries'"
    ).fetchall()
    for name, _ in triggers:
        connection.execute(f'DROP TRIGGER "{name}"')
    return [sql for _, sql in triggers]


def _clear_change_log(connection: sqlite3.Connection) -> None:
    """Empty the change log, if the schema has one (version 3 on)."""
    has_log = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'changes'"
    ).fetchone()
    if has_log:
        connection.execute("DELETE FROM changes")


def column_sizes(db: Path) -> dict[str, float]:
    """Average stored sizes per entry: the raw answer, the compressed body, the headers."""
    with closing(sqlite3.connect(db)) as connection:
        raw, body, headers, count = connection.execute(
            "SELECT AVG(body_size), AVG(LENGTH(body)), AVG(LENGTH(headers)), COUNT(*) FROM entries"
        ).fetchone()
    return {"raw_body": raw, "stored_body": body, "headers": headers, "entries": count}
