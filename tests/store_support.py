"""What the store tests share: keys and entries as the engine makes them, raw SQL, a clock."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet import reactor

from stasis.model import Change, ChangeKind, Entry, TokenUsage


def key(n: int | str) -> str:
    """A cache key as the engine makes them: 64 lowercase hex digits."""
    return hashlib.sha256(str(n).encode()).hexdigest()


def make_entry(n: int | str = 0, **fields: Any) -> Entry:
    values: dict[str, Any] = {
        "key": key(n),
        "status": 200,
        "headers": ((b"content-type", b"application/json"),),
        "body": b'{"answer": 42}',
        "created_at": 1_700_000_000.0,
        "method": "POST",
        "path": "/v1/chat/completions",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "usage": TokenUsage(input=10, output=5, total=15),
    }
    values.update(fields)
    return Entry(**values)


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection beside the store's, in autocommit mode."""
    connection = sqlite3.connect(str(path), isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def merged(changes: list[Change]) -> list[tuple[ChangeKind, list[str]]]:
    """
    Changes with each run of one kind merged into one: a store may publish a
    batch of puts as one change or as one per put, and both say the same.
    """
    runs: list[tuple[ChangeKind, list[str]]] = []
    for change in changes:
        if runs and runs[-1][0] is change.kind:
            runs[-1][1].extend(change.keys)
        else:
            runs.append((change.kind, list(change.keys)))
    return runs


class ShiftedReactor:
    """
    The real reactor, whose ``seconds()`` the test can move forward.

    ``task.Clock`` cannot stand in: the store hands its reactor to adbapi as
    ``cp_reactor``, which needs ``callWhenRunning``, ``addSystemEventTrigger``
    and ``callFromThread``.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def seconds(self) -> float:
        return float(reactor.seconds()) + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)
