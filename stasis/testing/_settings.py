"""
The plugin's three settings, each from the first place that gives it.

Precedence is command line > ini file > environment > default, per setting:
a project's ini file says where its recordings live, a developer's shell or a
CI job's environment says what to do with them, and the command line beats
both for one run. Relative paths are relative to where they were written: the
ini file's folder for the ini value, the current directory for the command
line and the environment, the rootdir for the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from attrs import frozen

from stasis.testing._errors import SettingsError

__all__ = [
    "DEFAULT_DB",
    "MODES",
    "OFF",
    "Setting",
    "Settings",
    "parse_mode",
    "resolve",
    "split_upstreams",
]

#: The daemon's modes, in the order the documentation lists them.
MODES = ("cache", "fresh", "bypass", "replay")
#: ``record`` is what users of VCR-style tools type; it records new calls and
#: replays recorded ones, which is stasis's ``cache``.
ALIASES = {"record": "cache"}
#: Says "no proxy" explicitly, e.g. on the command line over an ini file's mode.
OFF = "off"
#: The daemon's own default file name, so the plugin and ``stasis start`` run
#: in the project folder share one cache.
DEFAULT_DB = "stasis-cache.db"


@frozen
class Setting:
    """One value as the user gave it, with where it came from."""

    value: str
    #: How the user wrote it, to name it in an error: ``--stasis-mode``,
    #: ``stasis_mode (pytest.ini)``, ``$STASIS_MODE``.
    origin: str
    #: What a relative path in ``value`` is relative to.
    base: Path


@frozen
class Settings:
    """The session's proxy, when a mode is set."""

    #: One of :data:`MODES`.
    mode: str
    #: The database: an absolute path (an SQLite file or a cassette), or a URL.
    db: str
    #: The daemon's ``--upstream`` values (``URL`` or ``NAME=URL``); empty: its defaults.
    upstreams: tuple[str, ...] = ()


def _first(candidates: Iterable[Setting | None]) -> Setting | None:
    for candidate in candidates:
        if candidate is not None and candidate.value.strip():
            return candidate
    return None


def parse_mode(value: str, origin: str) -> str | None:
    """A mode name (aliases resolved), or None for ``off``; :class:`SettingsError` otherwise."""
    name = value.strip().lower()
    if name == OFF:
        return None
    name = ALIASES.get(name, name)
    if name not in MODES:
        allowed = ", ".join([*MODES, *ALIASES, OFF])
        raise SettingsError(f"{origin}: unknown mode {value.strip()!r}; allowed: {allowed}")
    return name


def split_upstreams(text: str) -> list[str]:
    """``URL`` / ``NAME=URL`` values separated by commas or whitespace (newlines in an ini)."""
    return [part for part in re.split(r"[,\s]+", text) if part]


def _db(setting: Setting) -> str:
    value = setting.value.strip()
    if "://" in value:  # postgresql://..., handed to the daemon as it is
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (setting.base / path).resolve())


def resolve(
    mode: Sequence[Setting | None],
    db: Sequence[Setting | None],
    upstream: Sequence[Setting | None],
    default_db: Path,
) -> Settings | None:
    """
    The settings from candidates given in order of precedence, or None when
    no mode is set (or the first one given is ``off``): then nothing runs.

    An upstream setting holds one or more values; the first place that gives
    any replaces all the others, as ``--upstream`` replaces ``$STASIS_UPSTREAM``.
    """
    chosen_mode = _first(mode)
    if chosen_mode is None:
        return None
    name = parse_mode(chosen_mode.value, chosen_mode.origin)
    if name is None:
        return None
    chosen_db = _first(db)
    location = _db(chosen_db) if chosen_db is not None else str(default_db.resolve())
    chosen_upstream = _first(upstream)
    upstreams = split_upstreams(chosen_upstream.value) if chosen_upstream is not None else []
    return Settings(mode=name, db=location, upstreams=tuple(upstreams))
