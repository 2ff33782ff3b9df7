"""
The ``stasis`` console script, with the original stasis-proxy CLI.

``stasis start`` runs the daemon (:mod:`stasis.commands.start`); the other
commands (``ls``, ``show``, ``rm``, ``purge``, ``prune``, ``stats``,
``export``, ``import``) manage its database (:mod:`stasis.commands`). Each
loads only what it needs: a management command starts in about half the
time the daemon's modules would take to import.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.python import usage

from stasis import commands

__all__ = ["main"]


def _start_options() -> usage.Options:
    from stasis.commands.start import StartOptions

    return StartOptions()


class Options(usage.Options):
    synopsis = "Usage: stasis"
    longdesc = "A zero-config caching proxy for LLM APIs. Run 'stasis <command> --help' for more."

    subCommands = [
        ["start", None, _start_options, "Start the caching proxy in the foreground."],
        *([c.name, None, c.options, c.summary] for c in commands.COMMANDS),
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        from stasis import __version__

        print(f"stasis {__version__.public()}")
        raise SystemExit(0)

    opt_v = opt_version
    # usage.Options leaves -h out for fear of clashing with a "host" option; stasis has none.
    opt_h = usage.Options.opt_help

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required")


def main(argv: Sequence[str] | None = None) -> None:
    options = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(  # type: ignore[no-untyped-call]
            list(sys.argv[1:] if argv is None else argv)
        )
    except usage.UsageError as e:
        from stasis.tap import fail_usage

        fail_usage(str(e))
    if options.subCommand == "start":
        from stasis.commands.start import run_start

        run_start(options.subOptions)
    else:
        commands.run_command(commands.by_name(str(options.subCommand)), options.subOptions)
