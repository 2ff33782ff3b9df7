"""
The parts of the pytest plugin (:mod:`stasis.pytest_plugin`) that are not
pytest glue: settings, the daemon process, cassettes, the environment, and
:class:`StasisProxy`, the type of the ``stasis_proxy`` fixture.

Imported only once a session sets a mode: loading the plugin must cost a
session that does not use it nothing. Nothing here imports Twisted; the daemon
is a child process.
"""

from __future__ import annotations

from stasis.testing._errors import (
    CassetteError,
    DaemonStartError,
    MarkerError,
    PluginError,
    SettingsError,
)
from stasis.testing._proxy import PROVIDERS, Directives, Provider, StasisProxy

__all__ = [
    "PROVIDERS",
    "CassetteError",
    "DaemonStartError",
    "Directives",
    "MarkerError",
    "PluginError",
    "Provider",
    "SettingsError",
    "StasisProxy",
]
