"""
stasis: a zero-config, local-first caching proxy for LLM APIs, on Twisted.

Embedding: build a :class:`StasisService` from a :class:`Config` and start it
(or add it to an application); ``twistd -n stasis`` does exactly that.
"""

from stasis._version import __version__
from stasis.config import Config
from stasis.modes import Mode
from stasis.service import StartupError, StasisService

__all__ = ["Config", "Mode", "StartupError", "StasisService", "__version__"]
