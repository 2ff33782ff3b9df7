"""
The ways the pytest plugin can fail before or after the tests run.

Each is a type the plugin turns into pytest's own way of saying it (a usage
error at start, a failing exit status at the end), so nothing here imports
pytest and each part can be tested alone.
"""

from __future__ import annotations

__all__ = ["CassetteError", "DaemonStartError", "MarkerError", "PluginError", "SettingsError"]


class PluginError(Exception):
    """Something the user must fix; the message says what, in one or a few lines."""


class SettingsError(PluginError):
    """An option, ini value or environment variable has a value the plugin cannot use."""


class DaemonStartError(PluginError):
    """The daemon did not start: it exited, or did not write its ready file in time."""


class CassetteError(PluginError):
    """A cassette could not be imported before the session or exported after it."""


class MarkerError(PluginError):
    """A ``@pytest.mark.stasis(...)`` with an argument it does not take."""
