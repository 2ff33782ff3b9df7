"""
Running one management command: open the store, run the reactor around the
work, close the store, exit with a status a script can test.

Whatever goes wrong ends as one line on stderr, never a traceback: a missing
database file (``stasis: no cache database at PATH``, status 1, and no file
created: only ``import`` makes one), a database stasis cannot use, a
:class:`~stasis.commands._command.CommandError` from the work, Ctrl-C (status
130), a closed pipe (``stasis ls | head``: quietly, status 141, as if the
signal had killed it). A database file the command created (``import``) is
removed again when the command fails, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO, Any, NoReturn, TypeVar

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogBeginner
from zope.interface import implementer

from stasis.commands._command import Command, CommandError, Console
from stasis.commands._options import CommandOptions
from stasis.store import StoreError, open_store

__all__ = ["run_command"]

_O = TypeVar("_O", bound=CommandOptions)

#: Exit statuses besides 0 (done) and 1 (failed), as a shell reports the signals.
INTERRUPTED = 130
BROKEN_PIPE = 141


def _is_url(db: str) -> bool:
    # open_store decides what a URL means; a missing *file* is this module's to refuse.
    return "://" in db


@implementer(ILogObserver)
class _OneLineErrors:
    """
    stasis's error log lines (a database thread failing, say) as one line
    each on stderr; warnings meant for a daemon's log (a read-only database
    serving hits) say nothing a command's own output does not.
    """

    def __init__(self, stderr: IO[str]) -> None:
        self._stderr = stderr

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        if level is None or level < LogLevel.error:
            return
        # The first line: a legacy log.err event formats its traceback after it.
        text = formatEvent(event).split("\n", 1)[0]
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}: {failure.getErrorMessage()}"
        self._stderr.write(f"stasis: {text}\n")


def _fail(message: str, status: int = 1) -> NoReturn:
    sys.stderr.write(f"stasis: {message}\n")
    raise SystemExit(status)


def _quiet_broken_pipe() -> NoReturn:
    # Point stdout at /dev/null so the interpreter's last flush does not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(BROKEN_PIPE)


def _remove_database(db: str) -> None:
    for path in (db, f"{db}-wal", f"{db}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


async def _main(reactor: Any, command: Command[_O], options: _O, created: bool) -> None:
    try:
        store = open_store(options.db, reactor)
        store.open()
    except StoreError as e:
        if created:
            _remove_database(options.db)
        _fail(str(e))
    console = Console(reactor)
    work: Deferred[None] = ensureDeferred(command.run(store, options, console))
    # Ctrl-C stops the reactor: cancel the work (a question waiting for its
    # answer, a query) so that react() exits with the right status.
    trigger = reactor.addSystemEventTrigger("before", "shutdown", work.cancel)
    try:
        await work
    except CancelledError:
        # The reactor is stopping: do not wait for the store, it closes with it.
        sys.stderr.write("\nstasis: interrupted\n")
        raise SystemExit(INTERRUPTED) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
    except CommandError as e:
        status = e.status
        sys.stderr.write(f"stasis: {e.message}\n")
    except StoreError as e:
        status = 1
        sys.stderr.write(f"stasis: {e}\n")
    except Exception as e:
        status = 1
        sys.stderr.write(f"stasis: {command.name} failed: {type(e).__name__}: {e}\n")
    else:
        status = 0
    reactor.removeSystemEventTrigger(trigger)
    await store.close()
    if status and created:
        _remove_database(options.db)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    if status:
        raise SystemExit(status)


def run_command(command: Command[_O], options: _O) -> NoReturn:
    """Run ``command`` on the database ``options`` name, and exit."""
    db = options.db
    missing = not _is_url(db) and not os.path.exists(db)
    if missing and not command.creates_database:
        _fail(f"no cache database at {db}")
    globalLogBeginner.beginLoggingTo([_OneLineErrors(sys.stderr)], redirectStandardIO=False)
    react(_main, (command, options, missing))
