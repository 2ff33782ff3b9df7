"""
Export a store to a cassette, import a cassette into a store.

Export pages through the listing (small facts, newest first), picks one entry
per portable key, then reads the answers a batch at a time in key order and
writes as it goes: memory stays bounded by the keys, not the answers. Import
reads and checks every document first and stores them all in one
``put_all``: a cassette with one bad file imports nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from attrs import define, field

from stasis.cassettes._document import entry_document, entry_from_document
from stasis.cassettes._files import (
    DirectorySink,
    LinesSink,
    Sink,
    document_bytes,
    is_lines,
    read_directory,
    read_lines,
)
from stasis.cassettes._format import CassetteError
from stasis.model import Entry, EntryFilter

if TYPE_CHECKING:
    from stasis.store import Store

__all__ = ["Progress", "export_cassette", "import_cassette"]

#: Called with (entries done, entries in all) now and then, and once at the end.
Progress = Callable[[int, int], None]

#: Entries listed a page at a time (their facts only, not their answers).
LISTING_PAGE = 1000
#: Answers read a batch at a time.
READ_BATCH = 500
#: Progress is reported every 1 % of the entries, but at least this many apart:
#: about a hundred calls for a large cache, a few for a small one.
PROGRESS_EVERY = 200

#: What an import from ``-`` calls the input in its errors.
STDIN_NAME = "<stdin>"


@define
class _Reporter:
    """Calls ``progress`` every so often: per entry would cost more than the work at 100k."""

    progress: Progress | None
    total: int
    _next: int = field(init=False, default=0)

    def advance(self, done: int) -> None:
        if self.progress is not None and done >= self._next and done < self.total:
            self.progress(done, self.total)
            self._next = done + max(PROGRESS_EVERY, self.total // 100)

    def finish(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.total)


def _rank(key: str, portable_key: str, created_at: float) -> tuple[bool, float, str]:
    """Which entry of a portable key is exported: the shared one, else the newest."""
    return (key == portable_key, created_at, key)


async def _exported_keys(store: Store) -> list[str]:
    """The stored key to export for each portable key, in portable key order."""
    best: dict[str, tuple[bool, float, str]] = {}
    cursor: str | None = None
    while True:
        page = await store.list_entries(EntryFilter(), LISTING_PAGE, cursor)
        for info in page.entries:
            rank = _rank(info.key, info.portable_key, info.created_at)
            current = best.get(info.portable_key)
            if current is None or rank > current:
                best[info.portable_key] = rank
        if page.cursor is None:
            return [best[portable][2] for portable in sorted(best)]
        cursor = page.cursor


def _sink(path: str, stdout: BinaryIO | None) -> Sink:
    if path == "-":
        return LinesSink(path, stdout if stdout is not None else sys.stdout.buffer)
    if is_lines(path):
        return LinesSink(path)
    return DirectorySink(path)


def _os_error(path: str, error: OSError) -> CassetteError:
    """``PATH: No such file or directory (the file it was about)``."""
    problem = error.strerror or str(error)
    if error.filename and error.filename != path:
        problem = f"{problem} ({error.filename})"
    return CassetteError(path, problem)


async def export_cassette(
    store: Store,
    path: str,
    *,
    progress: Progress | None = None,
    stdout: BinaryIO | None = None,
) -> int:
    """
    Write every entry of ``store`` to ``path``, one per portable key; return how many.

    ``path`` is a directory (created if need be; ``<key>.json`` files of
    entries no longer in the store are removed, other files left alone), a
    ``.jsonl`` file, or ``-`` for ``stdout`` (default: this process's).
    The same store always exports the same bytes.
    """
    keys = await _exported_keys(store)
    reporter = _Reporter(progress, len(keys))
    indent = not is_lines(path)
    try:
        sink = _sink(path, stdout)
    except OSError as error:
        raise _os_error(path, error) from error
    written = 0
    try:
        for start in range(0, len(keys), READ_BATCH):
            batch = keys[start : start + READ_BATCH]
            for entry in await store.get_many(batch):
                document = document_bytes(entry_document(entry), indent=indent)
                sink.write(entry.portable_key, document)
                written += 1
            reporter.advance(start + len(batch))
        sink.commit()
    except OSError as error:
        sink.abandon()
        raise _os_error(path, error) from error
    except BaseException:
        sink.abandon()
        raise
    reporter.finish(written)
    return written


def _directory_entries(path: str) -> tuple[int, Iterator[tuple[Entry, str]]]:
    names, files = read_directory(path)

    def entries() -> Iterator[tuple[Entry, str]]:
        for file in files:
            entry = entry_from_document(file.document, file.where)
            if entry.key != file.stem:
                raise CassetteError(
                    file.key_where, f"key {entry.key} is not the one the file is named for"
                )
            yield entry, file.key_where

    return len(names), entries()


def _lines_entries(data: bytes, name: str) -> tuple[int, Iterator[tuple[Entry, str]]]:
    total = sum(1 for line in data.split(b"\n") if line.strip())
    entries = (
        (entry_from_document(document, where), where) for document, where in read_lines(data, name)
    )
    return total, entries


def _read_all(path: str, stdin: BinaryIO | None, progress: Progress | None) -> list[Entry]:
    """Every entry of the cassette, checked; a CassetteError at the first thing wrong."""
    if path == "-":
        source = stdin if stdin is not None else sys.stdin.buffer
        total, found = _lines_entries(source.read(), STDIN_NAME)
    elif os.path.isdir(path):
        total, found = _directory_entries(path)
    elif os.path.exists(path):
        with open(path, "rb") as handle:
            total, found = _lines_entries(handle.read(), path)
    else:
        raise CassetteError(path, "no such file or directory")
    reporter = _Reporter(progress, total)
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for entry, where in found:
        if entry.key in seen:
            raise CassetteError(where, f"key {entry.key} is already at {seen[entry.key]}")
        seen[entry.key] = where
        entries.append(entry)
        reporter.advance(len(entries))
    return entries


async def import_cassette(
    store: Store,
    path: str,
    *,
    progress: Progress | None = None,
    stdin: BinaryIO | None = None,
) -> int:
    """
    Store every entry of the cassette at ``path`` in the shared scope; return how many.

    ``path`` is a directory of ``*.json`` files (other files are ignored), a
    JSON Lines file, or ``-`` for ``stdin`` (default: this process's). Every
    document is read and checked first, then all are stored in one
    transaction: on any :class:`CassetteError`, nothing is stored. An entry
    of the same key is replaced.
    """
    try:
        entries = _read_all(path, stdin, progress)
    except OSError as error:
        raise _os_error(path, error) from error
    if entries:
        await store.put_all(entries)
    if progress is not None:
        progress(len(entries), len(entries))
    return len(entries)
