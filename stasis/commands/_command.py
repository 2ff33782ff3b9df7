"""
What a management command is: its options, the coroutine that does its work on
an open store, and the console it talks to.

The work gets its streams, its clock and its questions through :class:`Console`
rather than from ``sys`` and ``time``, so the runner alone knows it is a
process with a terminal, and the work reads the same whoever runs it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Coroutine
from typing import IO, Any, BinaryIO, Generic, TypeVar

from attrs import define, field, frozen
from twisted.internet.defer import Deferred

from stasis.commands._options import CommandOptions
from stasis.store import Store

__all__ = ["Command", "CommandError", "Console"]

_O = TypeVar("_O", bound=CommandOptions)


class CommandError(Exception):
    """A command cannot do what it was asked: one line for the user, and an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


#: Control characters (C0 but newline and tab, DEL, C1) as visible escapes.
#: What a command prints came from clients and models: a stored prompt holding
#: ``ESC ]0;…`` or ``ESC [2J`` must not retitle or clear the reader's terminal.
_VISIBLE = {
    code: f"\\x{code:02x}"
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))
    if chr(code) not in "\n\t"
}


#: The same characters where JSON may hold them raw (DEL, C1), as JSON escapes.
_VISIBLE_IN_JSON = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def visible_json(text: str) -> str:
    """
    JSON text (as ``json.dumps(..., ensure_ascii=False)`` writes it, C0 already
    escaped) with DEL and C1 escaped too: still the same JSON, safe to print.
    """
    return text.translate(_VISIBLE_IN_JSON)


def visible(text: str) -> str:
    """``text`` with its control characters (but newline and tab) shown as ``\\xNN``."""
    return text.translate(_VISIBLE)


@define
class Console:
    """The command's terminal (or pipes), its clock, and a way to ask the user."""

    reactor: Any
    stdout: IO[str] = field(factory=lambda: sys.stdout)
    stderr: IO[str] = field(factory=lambda: sys.stderr)
    stdin: IO[str] = field(factory=lambda: sys.stdin)

    def out(self, text: str) -> None:
        self.stdout.write(visible(text) + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(visible(text) + "\n")
        self.stderr.flush()

    def now(self) -> float:
        """POSIX seconds."""
        return float(self.reactor.seconds())

    @property
    def stdout_bytes(self) -> BinaryIO:
        """Standard output for bytes (a cassette as JSON Lines), after the text written so far."""
        self.stdout.flush()
        buffer: BinaryIO = self.stdout.buffer  # type: ignore[attr-defined]
        return buffer

    @property
    def stdin_bytes(self) -> BinaryIO:
        buffer: BinaryIO = self.stdin.buffer  # type: ignore[attr-defined]
        return buffer

    def ask(self, question: str) -> Deferred[str]:
        """
        Write ``question`` on stderr and fire with the line typed ("" at end of
        input). The line is read in a daemon thread, so that the reactor goes on
        (Ctrl-C stops it, cancelling the question) and a process that is told to
        stop is never held up by a read.
        """
        self.stderr.write(question)
        self.stderr.flush()
        answer: Deferred[str] = Deferred()

        def read() -> None:
            try:
                line = self.stdin.readline()
            except (OSError, ValueError):
                line = ""
            # A cancelled question ignores its late answer.
            self.reactor.callFromThread(answer.callback, line)

        threading.Thread(target=read, name="stasis-ask", daemon=True).start()
        return answer


@frozen
class Command(Generic[_O]):
    """One ``stasis`` subcommand that works on the cache database."""

    name: str
    #: One line for ``stasis --help``.
    summary: str
    options: type[_O]
    #: The work, on an open store; a failure the user can act on is a CommandError.
    run: Callable[[Store, _O, Console], Coroutine[Any, Any, None]]
    #: Whether a missing database is created (import) rather than refused.
    creates_database: bool = False
