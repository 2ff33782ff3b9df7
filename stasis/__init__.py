"""
stasis: a zero-config, local-first caching proxy for LLM APIs, on Twisted.

Embedding: build a :class:`StasisService` from a :class:`Config` and start it
(or add it to an application); ``twistd -n stasis`` does exactly that. A
program without a Twisted reactor calls :func:`serve_in_thread` instead.

The public names are imported on first use: ``import stasis.keys`` (a pytest
plugin, a script that only derives keys) must not pay for Twisted's web
server, treq and the database driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stasis._version import __version__

if TYPE_CHECKING:
    from stasis.config import Config
    from stasis.embedded import EmbeddedProxy, serve_in_thread
    from stasis.modes import Mode
    from stasis.service import StartupError, StasisService

__all__ = [
    "Config",
    "EmbeddedProxy",
    "Mode",
    "StartupError",
    "StasisService",
    "__version__",
    "serve_in_thread",
]

#: Public name -> the module that defines it.
_LAZY = {
    "Config": "stasis.config",
    "EmbeddedProxy": "stasis.embedded",
    "Mode": "stasis.modes",
    "StartupError": "stasis.service",
    "StasisService": "stasis.service",
    "serve_in_thread": "stasis.embedded",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stasis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
