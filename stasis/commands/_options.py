"""
The options every management command shares: ``-d/--db`` as ``stasis start``
takes it, ``-h``, the entry filters of ``ls`` and ``purge``, a key argument.

A mistake on the command line is reported the way ``stasis start`` reports
one (``stasis ls: error: … (see --help)``, exit status 2) before anything is
opened, so a typo never touches the database.
"""

from __future__ import annotations

import getopt
import os
import string
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from twisted.python import usage

from stasis.config import DEFAULT_DB, PROVIDER_NAMES
from stasis.model import EntryFilter
from stasis.times import parse_moment

__all__ = ["KEY_PREFIX_MIN", "CommandOptions", "FilterOptions", "check_key", "positive_number"]

#: The shortest key prefix taken for a key: shorter ones match too many entries to be meant.
KEY_PREFIX_MIN = 6
_KEY_LENGTH = 64


def check_key(value: str) -> str:
    """``value`` as a key or key prefix (lower-case hex), or a UsageError saying why not."""
    key = value.strip().lower()
    if not key or any(c not in string.hexdigits for c in key) or len(key) > _KEY_LENGTH:
        raise usage.UsageError(f"{value!r} is not a cache key (up to {_KEY_LENGTH} hex digits)")
    if len(key) < KEY_PREFIX_MIN:
        raise usage.UsageError(
            f"{value!r} is too short: give at least {KEY_PREFIX_MIN} hex digits of the key"
        )
    return key


def positive_number(name: str) -> Callable[[str], int]:
    """A coerce for an option taking a whole number of at least 1, naming it in the error."""

    def coerce(value: str) -> int:
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        return int(value)

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


class CommandOptions(usage.Options):
    """
    ``-d/--db`` (default ``./stasis-cache.db``, or ``$STASIS_DB``) and ``-h``.

    ``examples`` are shown under the options in ``--help``, line by line
    (``longdesc`` is re-wrapped by twisted.python.usage, so it cannot hold them).
    """

    examples: ClassVar[tuple[str, ...]] = ()

    optParameters: ClassVar[list[list[Any]]] = [
        ["db", "d", DEFAULT_DB, "The cache database: an SQLite file ($STASIS_DB)."],
    ]

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        environ = os.environ if environ is None else environ
        self["db"] = environ.get("STASIS_DB") or DEFAULT_DB
        self.clock = clock

    # usage.Options leaves -h out for fear of clashing with a "host" option; stasis has none.
    opt_h = usage.Options.opt_help

    def opt_version(self) -> None:
        """Print the version and exit."""
        from stasis import __version__

        print(f"stasis {__version__.public()}")
        raise SystemExit(0)

    @property
    def db(self) -> str:
        return str(self["db"])

    @property
    def command_line(self) -> str:
        """How the user called this command (``stasis ls``), to begin its error lines."""
        name = getattr(getattr(self, "parent", None), "subCommand", None)
        return f"stasis {name}" if name else "stasis"

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, turning a mistake into one line on stderr and exit status 2."""
        try:
            super().parseOptions(self._options_first(options))  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            from stasis.tap import fail_usage  # the daemon's modules, loaded only on a mistake

            fail_usage(str(e), self.command_line)

    def _options_first(self, arguments: list[str] | None) -> list[str]:
        """
        ``arguments`` with the options before the others, as GNU's getopt reads
        them: ``stasis show KEY --json`` as well as ``stasis show --json KEY``
        (twisted.python.usage stops at the first argument that is not an option).
        """
        arguments = sys.argv[1:] if arguments is None else arguments
        try:
            options, rest = getopt.gnu_getopt(arguments, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for option, value in options:
            takes_value = (
                f"{option[2:]}=" in self.longOpt
                if option.startswith("--")
                else f"{option[1:]}:" in self.shortOpt
            )
            ordered += [option, value] if takes_value else [option]
        return [*ordered, "--", *rest]

    def getUsage(self, width: int | None = None) -> str:
        text = super().getUsage(width)
        if self.examples:
            text += "\nExamples:\n" + "".join(f"  {line}\n" for line in self.examples)
        return text


class FilterOptions(CommandOptions):
    """The filters that pick entries by what they answer and when they were stored."""

    optParameters = [
        ["provider", None, None, f"Only this provider's entries: {', '.join(PROVIDER_NAMES)}."],
        ["model", None, None, "Only entries for this model (exactly, e.g. gpt-4o-mini)."],
        ["namespace", None, None, "Only this namespace's entries ('' for the default one)."],
        ["path", None, None, "Only entries for this request path (e.g. /v1/chat/completions)."],
        [
            "since",
            None,
            None,
            "Only entries stored at or after this time: an ISO-8601 date or time (UTC "
            "unless it names a zone) or a duration ago, e.g. 90s, 12h, 7d.",
        ],
        ["until", None, None, "Only entries stored before this time (as --since)."],
        [
            "search",
            None,
            None,
            "Only entries whose model, prompt or answer text holds this text, in any case "
            "(e.g. 'weather in oslo'; % and _ are plain characters).",
        ],
    ]

    where = EntryFilter()

    def postOptions(self) -> None:
        provider = self["provider"]
        if provider is not None and provider not in PROVIDER_NAMES:
            raise usage.UsageError(
                f"--provider {provider!r} is not one of {', '.join(PROVIDER_NAMES)}"
            )
        now = self.clock()
        moments: dict[str, float | None] = {}
        for name in ("since", "until"):
            value = self[name]
            try:
                moments[name] = None if value is None else parse_moment(value, now)
            except ValueError as e:
                raise usage.UsageError(f"--{name} {e}") from None
        self.where = EntryFilter(
            provider=provider,
            model=self["model"],
            namespace=self["namespace"],
            path=self["path"],
            since=moments["since"],
            until=moments["until"],
            text=self["search"] or None,
        )

    def describe_filter(self) -> str:
        """The filters given, as typed (``provider=openai, since=7d``); "" for none."""
        names = ("provider", "model", "namespace", "path", "since", "until", "search")
        return ", ".join(f"{name}={self[name]}" for name in names if self[name] is not None)
