"""
The ``stasis`` console script, with the original stasis-proxy CLI.

``stasis start`` runs the daemon in the foreground through twistd's own
runner (the same service ``twistd -n stasis`` builds), without a pid file
unless one is asked for, so two daemons in one folder never collide over
``twistd.pid``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.python import usage

from stasis import tap

__all__ = ["main"]


class StartOptions(tap.Options):
    synopsis = "[options]"
    longdesc = "Run the caching proxy in the foreground (Ctrl-C stops it)."

    optParameters = [
        ["pidfile", None, "", "Write the process id to this file (default: none)."],
    ]


class Options(usage.Options):
    synopsis = "Usage: stasis"
    longdesc = "A zero-config caching proxy for LLM APIs. Run 'stasis <command> --help' for more."

    subCommands = [
        ["start", None, StartOptions, "Start the caching proxy in the foreground."],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        from stasis import __version__

        print(f"stasis {__version__.public()}")
        raise SystemExit(0)

    opt_v = opt_version

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required")


def _run_start(options: StartOptions) -> None:
    from twisted.application.service import ServiceMaker
    from twisted.scripts.twistd import ServerOptions, runApp  # type: ignore[attr-defined]

    config = ServerOptions()
    config.parseOptions(
        ["--nodaemon", "--pidfile", options["pidfile"], "--logger", "stasis.log.observer"]
    )
    # Hand twistd the options already parsed, as if it had read them itself.
    config.subCommand = "stasis"
    config.subOptions = options
    config["no_save"] = True  # twistd sets this itself whenever it parsed a subcommand
    config.loadedPlugins = {"stasis": ServiceMaker("stasis", "stasis.tap", "", "stasis")}
    runApp(config)


def main(argv: Sequence[str] | None = None) -> None:
    options = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(  # type: ignore[no-untyped-call]
            list(sys.argv[1:] if argv is None else argv)
        )
    except usage.UsageError as e:
        tap.fail_usage(str(e))
    if options.subCommand == "start":
        _run_start(options.subOptions)
