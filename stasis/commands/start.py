"""
``stasis start``: the daemon in the foreground, through twistd's own runner
(the same service ``twistd -n stasis`` builds), without a pid file unless one
is asked for, so two daemons in one folder never collide over ``twistd.pid``.

Handing twistd the options already parsed relies on how twistd's
``ServerOptions`` and ``ApplicationRunner`` meet, which is not public API:
:func:`handover_problem` checks it (a test runs it, so a Twisted release that
changes it fails loudly), and when it no longer holds ``stasis start`` falls
back to letting twistd find the plugin itself, which is slower and needs an
installation twistd can see the plugin in.

Unlike the other commands it opens no store itself, and it is imported only
when it runs: the daemon's modules are more than ``stasis ls`` needs to load.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceMaker, Service, ServiceMaker
from twisted.python import usage
from zope.interface import implementer

from stasis import tap

__all__ = ["StartOptions", "handover_problem", "run_start"]

#: twistd's options for a foreground daemon with stasis's log observer.
_TWISTD_OPTIONS = ["--nodaemon", "--logger", "stasis.log.observer"]
_PLUGIN = ServiceMaker("stasis", "stasis.tap", "", "stasis")


class StartOptions(tap.Options):
    synopsis = "[options]"
    longdesc = "Run the caching proxy in the foreground (Ctrl-C stops it)."

    optParameters = [
        ["pidfile", None, "", "Write the process id to this file (default: none)."],
    ]


def _hand_over(config: Any, options: StartOptions) -> None:
    """Give twistd's ``config`` the stasis options as if it had parsed them itself."""
    config.subCommand = "stasis"
    config.subOptions = options
    config.loadedPlugins = {"stasis": _PLUGIN}
    config["no_save"] = True  # twistd sets this itself whenever it parsed a subcommand


@implementer(IServiceMaker)
class _Probe:
    """A plugin that records what twistd makes its service from."""

    tapname = "stasis"
    description = ""
    options = StartOptions

    def __init__(self) -> None:
        self.given: object = None
        self.made = Service()

    def makeService(self, options: object) -> Service:
        self.given = options
        return self.made


def handover_problem() -> str | None:
    """
    None if twistd still builds its application from options handed over the
    way ``stasis start`` hands them (``subCommand``, ``subOptions``,
    ``loadedPlugins`` and the ``no_save`` option of ``ServerOptions``, read by
    ``ApplicationRunner.createOrGetApplication``); otherwise what changed.

    It builds an application with a probe plugin, without starting anything.
    """
    from twisted.application.app import ApplicationRunner
    from twisted.application.service import IServiceCollection
    from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

    config = ServerOptions()
    try:
        config.parseOptions([*_TWISTD_OPTIONS, "--pidfile", ""])
    except usage.UsageError as e:
        return f"twistd refuses the options stasis start gives it: {e}"
    if "no_save" not in config:
        return "twistd's ServerOptions has no 'no_save' option any more"
    probe, options = _Probe(), StartOptions()
    try:
        _hand_over(config, options)
        config.loadedPlugins = {"stasis": probe}
        application = ApplicationRunner(config).createOrGetApplication()
        children = list(IServiceCollection(application))
    except Exception as e:
        return (
            "ApplicationRunner.createOrGetApplication no longer builds the application from "
            f"ServerOptions.subCommand, .subOptions and .loadedPlugins: {e!r}"
        )
    if probe.given is not options or children != [probe.made]:
        return (
            "ApplicationRunner.createOrGetApplication no longer makes its service from "
            "ServerOptions.loadedPlugins[subCommand] and .subOptions"
        )
    return None


def _twistd_config(options: StartOptions) -> Any:
    """twistd's options for running the service ``options`` describe, in the foreground."""
    from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

    config = ServerOptions()
    twistd_options = [*_TWISTD_OPTIONS, "--pidfile", options["pidfile"]]
    if handover_problem() is None:
        config.parseOptions(twistd_options)
        _hand_over(config, options)
    else:
        # twistd finds the plugin itself (slower: it loads every plugin) and
        # parses stasis's defaults, which are then replaced by the options
        # parsed already: usage.Options' subOptions is public.
        try:
            config.parseOptions([*twistd_options, "stasis"])
        except usage.UsageError as e:
            raise SystemExit(f"stasis: twistd cannot run the stasis plugin: {e}") from None
        config.subOptions = options
    return config


def run_start(options: StartOptions) -> None:
    from twisted.scripts.twistd import runApp

    runApp(_twistd_config(options))
