"""
Where documents go and come from: a directory of files, or JSON Lines.

A directory holds one file per entry, named by its key, so that two branches
that recorded different calls add different files and git merges them without
a conflict; exporting into it mirrors the cache (a ``<key>.json`` whose entry
is gone is removed; any other file is left alone: a README, a .gitattributes).
JSON Lines (a PATH ending in ``.jsonl``, or ``-`` for stdout/stdin) holds one
entry a line, in key order. Every file is written whole or not at all (a
temporary file, then ``os.replace``), so an export that fails leaves the
previous one in place. Writing is plain blocking I/O between the store's
reads: an export runs in a management command or a test session, not in a
daemon serving requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import IO, Any, BinaryIO, Protocol

from attrs import define, field

from stasis.cassettes._format import CassetteError

__all__ = [
    "DirectoryDocument",
    "DirectorySink",
    "LinesSink",
    "Sink",
    "document_bytes",
    "is_lines",
    "read_directory",
    "read_lines",
]

#: The files an export owns in a directory: it writes them, and removes those
#: whose entry is gone.
ENTRY_FILE = re.compile(r"[0-9a-f]{64}\.json\Z")


def is_lines(path: str) -> bool:
    """Whether ``path`` names JSON Lines (or stdout/stdin) rather than a directory."""
    return path == "-" or path.lower().endswith(".jsonl")


#: Scalars and arrays of scalars as a file shows them (escaping non-ASCII or not).
_INLINE = {
    ascii: json.JSONEncoder(ensure_ascii=ascii, separators=(", ", ": ")).encode
    for ascii in (False, True)
}
#: Strings alone, the commonest scalar: the encoder's own C function, without its set-up.
_STRING = {False: encode_basestring, True: encode_basestring_ascii}


def _expanded(value: Any) -> bool:
    """Whether ``value`` takes lines of its own: a non-empty object, an array holding one."""
    if isinstance(value, dict):
        return bool(value)
    return isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value)


def _layout(value: Any, depth: int, ascii: bool, out: list[str]) -> None:
    """Two-space indent, except that an array of scalars stays on one line."""
    inner = "\n" + "  " * (depth + 1)
    string, inline = _STRING[ascii], _INLINE[ascii]
    if isinstance(value, dict):
        pairs = [(f"{inner}{string(name)}: ", item) for name, item in value.items()]
        opening, closing = "{", "}"
    else:
        pairs = [(inner, item) for item in value]
        opening, closing = "[", "]"
    out.append(opening)
    for index, (head, item) in enumerate(pairs):
        out.append(head if index == 0 else "," + head)
        if _expanded(item):
            _layout(item, depth + 1, ascii, out)
        else:
            out.append(string(item) if isinstance(item, str) else inline(item))
    out.append("\n" + "  " * depth + closing)


def document_bytes(document: dict[str, Any], *, indent: bool) -> bytes:
    """
    One document as UTF-8 JSON with a final newline: for a file of its own,
    indented by two spaces with each array of scalars on one line (a header
    pair, a timeline step, an embedding), for JSON Lines on one compact line.
    Non-ASCII is written as itself (readable), except in the rare document
    that holds a lone surrogate, written escaped.
    """
    for ascii in (False, True):
        if indent:
            out: list[str] = []
            _layout(document, 0, ascii, out)
            text = "".join(out)
        else:
            text = json.dumps(document, ensure_ascii=ascii, separators=(",", ":"))
        try:
            return text.encode("utf-8") + b"\n"
        except UnicodeEncodeError:
            continue
    raise AssertionError("an ASCII document is always UTF-8")  # pragma: no cover


class Sink(Protocol):
    """Where an export writes, document by document, in key order."""

    def write(self, key: str, data: bytes) -> None: ...

    def commit(self) -> None:
        """Make the export whole (replace the file, remove stale entries)."""

    def abandon(self) -> None:
        """Leave what was there before (as far as it can be)."""


def _temporary(directory: str, name: str) -> tuple[IO[bytes], str]:
    """
    A new hidden file beside ``name``, to be moved over it. Created with mode
    0666 less the umask, like any file the user writes (``tempfile.mkstemp``
    would make it 0600, and the cassette unreadable to the rest of a team).
    """
    while True:
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        return os.fdopen(handle, "wb"), temporary


@define
class DirectorySink:
    """One file per entry; each written atomically, skipped when already the same."""

    path: str
    _written: set[str] = field(factory=set)

    def __attrs_post_init__(self) -> None:
        os.makedirs(self.path, exist_ok=True)

    def write(self, key: str, data: bytes) -> None:
        name = f"{key}.json"
        self._written.add(name)
        target = os.path.join(self.path, name)
        with contextlib.suppress(OSError), open(target, "rb") as existing:
            if existing.read(len(data) + 1) == data:
                return
        out, temporary = _temporary(self.path, name)
        try:
            with out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def commit(self) -> None:
        for name in os.listdir(self.path):
            if ENTRY_FILE.match(name) and name not in self._written:
                os.unlink(os.path.join(self.path, name))

    def abandon(self) -> None:
        """Files already written stay: each is whole, and the next export mirrors again."""


@define
class LinesSink:
    """JSON Lines into a temporary file beside ``path``, moved over it at the end; or a stream."""

    path: str
    stream: BinaryIO | None = None
    _out: IO[bytes] = field(init=False)
    #: The temporary file; empty when writing to ``stream``.
    _temporary: str = field(default="", init=False)

    def __attrs_post_init__(self) -> None:
        if self.stream is not None:
            self._out = self.stream
        else:
            directory, name = os.path.split(os.path.abspath(self.path))
            self._out, self._temporary = _temporary(directory, name)

    def write(self, key: str, data: bytes) -> None:
        self._out.write(data)

    def commit(self) -> None:
        if not self._temporary:
            self._out.flush()
            return
        with self._out:
            self._out.flush()
            os.fsync(self._out.fileno())
        os.replace(self._temporary, self.path)

    def abandon(self) -> None:
        if self._temporary:
            self._out.close()
            with contextlib.suppress(OSError):
                os.unlink(self._temporary)


def _line_of(data: bytes, position: int) -> int:
    return data.count(b"\n", 0, position) + 1


def _parsed(data: bytes, where_path: str, first_line: int = 1) -> Any:
    """``data`` as JSON; a CassetteError naming the line of what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + _line_of(data, error.start) - 1
        raise CassetteError(f"{where_path}:{line}", "not UTF-8") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        line = first_line + error.lineno - 1
        raise CassetteError(
            f"{where_path}:{line}", f"not JSON: {error.msg} (column {error.colno})"
        ) from error
    except ValueError as error:  # an integer of more digits than Python reads
        raise CassetteError(f"{where_path}:{first_line}", f"not JSON: {error}") from error
    except RecursionError as error:
        raise CassetteError(f"{where_path}:{first_line}", "not JSON: nested too deep") from error


def read_lines(data: bytes, name: str) -> Iterator[tuple[Any, str]]:
    """Each document of JSON Lines ``data``, with its ``name:LINE``; blank lines are skipped."""
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield _parsed(line, name, number), f"{name}:{number}"


@define
class DirectoryDocument:
    """One file of a directory cassette, parsed."""

    document: Any
    #: ``PATH:1``: where the document starts, for errors without a line of their own.
    where: str
    #: The key the file's name gives.
    stem: str
    #: ``PATH:LINE`` of the document's ``"key"`` field (or of its start).
    key_where: str


def _key_line(data: bytes) -> int:
    position = data.find(b'"key"')
    return 1 if position < 0 else _line_of(data, position)


def read_directory(path: str) -> tuple[list[str], Iterator[DirectoryDocument]]:
    """
    The ``*.json`` files of ``path`` (sorted), and an iterator that reads each.
    Other files are not read.
    """
    names = sorted(
        name
        for name in os.listdir(path)
        if name.endswith(".json") and os.path.isfile(os.path.join(path, name))
    )

    def documents() -> Iterator[DirectoryDocument]:
        for name in names:
            file = os.path.join(path, name)
            with open(file, "rb") as handle:
                data = handle.read()
            yield DirectoryDocument(
                _parsed(data, file), f"{file}:1", name[: -len(".json")], f"{file}:{_key_line(data)}"
            )

    return names, documents()
