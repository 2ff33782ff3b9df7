"""
``stasis export PATH`` and ``stasis import PATH``: the cache as cassettes, files
to commit beside the tests that recorded them (:mod:`stasis.cassettes` writes
and reads them; these commands only give it a store, a path and a progress bar).

``-`` is standard output or input, as JSON Lines, so the count goes to stderr.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.python import usage

from stasis.commands._command import Command, CommandError, Console
from stasis.commands._human import count_of
from stasis.commands._options import CommandOptions
from stasis.commands._progress import ProgressBar
from stasis.store import Store

__all__ = ["EXPORT", "IMPORT"]

STDIO = "-"


class _PathOptions(CommandOptions):
    synopsis = "[options] PATH"
    path = ""

    def parseArgs(self, *paths: str) -> None:
        if len(paths) != 1 or not paths[0]:
            raise usage.UsageError("give one PATH (- for standard output or input)")
        self.path = paths[0]


class ExportOptions(_PathOptions):
    longdesc = (
        "Write every entry, without credentials or account-identifying headers, to PATH: a "
        "directory of one JSON file per entry (named by its key, so branches that recorded "
        "different calls merge without conflicts), or JSON Lines when PATH ends in .jsonl or "
        "is - (standard output). The same cache always exports to the same bytes."
    )
    examples = (
        "stasis export tests/cassettes",
        "stasis export recorded.jsonl",
        "stasis export - | gzip > recorded.jsonl.gz",
    )


class ImportOptions(_PathOptions):
    longdesc = (
        "Read a cassette written by export (a directory, a .jsonl file, or - for standard "
        "input) into the cache, creating the database if need be. Entries go to the shared "
        "scope, so they answer a request made with any API key or none. All or nothing: a "
        "problem anywhere stores no entry and names the file and line."
    )
    examples = (
        "stasis import tests/cassettes",
        "gunzip -c recorded.jsonl.gz | stasis import -",
    )


def _library() -> Any:
    """:mod:`stasis.cassettes`, imported when a cassette is made or read, not for every command."""
    try:
        return importlib.import_module("stasis.cassettes")
    except ImportError as e:
        raise CommandError(
            f"this installation of stasis cannot read or write cassettes: {e}"
        ) from None


def _progress(console: Console, label: str) -> ProgressBar | None:
    return ProgressBar(console.stderr, label) if console.stderr.isatty() else None


def _where(path: str, stream: str) -> str:
    return stream if path == STDIO else path


async def _run(work: Any, progress: ProgressBar | None, cassettes: Any, path: str) -> int:
    try:
        count: int = await work
    except BrokenPipeError:
        raise
    except cassettes.CassetteError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"{path}: {e.strerror or e}") from None
    finally:
        if progress is not None:
            progress.clear()
    return count


async def run_export(store: Store, options: ExportOptions, console: Console) -> None:
    cassettes = _library()
    progress = _progress(console, "exporting")
    stdout = console.stdout_bytes if options.path == STDIO else None
    work = cassettes.export_cassette(store, options.path, progress=progress, stdout=stdout)
    count = await _run(work, progress, cassettes, options.path)
    if stdout is not None:
        stdout.flush()
    where = _where(options.path, "standard output")
    console.err(f"exported {count_of(count, 'entry', 'entries')} to {where}")


async def run_import(store: Store, options: ImportOptions, console: Console) -> None:
    cassettes = _library()
    progress = _progress(console, "importing")
    stdin = console.stdin_bytes if options.path == STDIO else None
    work = cassettes.import_cassette(store, options.path, progress=progress, stdin=stdin)
    count = await _run(work, progress, cassettes, options.path)
    where = _where(options.path, "standard input")
    console.err(f"imported {count_of(count, 'entry', 'entries')} from {where}")


EXPORT = Command(
    "export",
    "Write the cache to cassette files (a directory, .jsonl or -).",
    ExportOptions,
    run_export,
)
IMPORT = Command(
    "import",
    "Read cassette files into the cache (shared scope, all or nothing).",
    ImportOptions,
    run_import,
    creates_database=True,
)
