"""
The daemon's settings, as one frozen value built from options or by an embedder.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import field, frozen

from stasis.modes import Mode
from stasis.routing import Routes

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_PORT",
    "Config",
    "listen_on_port",
]

DEFAULT_PORT = 4000
DEFAULT_DB = "./stasis-cache.db"
DEFAULT_UPSTREAM_TIMEOUT = 600.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MEMORY_CACHE_BYTES = 64 * 1024 * 1024


def listen_on_port(port: int) -> str:
    """The endpoint for ``--port``: loopback only, since a cache of API answers is private."""
    return f"tcp:{port}:interface=127.0.0.1"


@frozen
class Config:
    """Everything a :class:`~stasis.service.StasisService` needs to know."""

    listen: str = listen_on_port(DEFAULT_PORT)
    #: One upstream for every request (the original tool's behaviour); None: route by provider.
    upstream: str | None = None
    #: Per-provider upstreams (``--upstream NAME=URL``), overriding the above.
    upstreams: Mapping[str, str] = field(factory=dict)
    db: str = DEFAULT_DB
    mode: Mode = Mode.CACHE
    log_level: str = "info"
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Bytes of hot entries kept in memory in front of the database; 0 turns it off.
    memory_cache_bytes: int = DEFAULT_MEMORY_CACHE_BYTES

    @property
    def routes(self) -> Routes:
        return Routes(everything=self.upstream, overrides=dict(self.upstreams))
