"""
The daemon's settings, as one frozen value built from options or by an embedder.
"""

from __future__ import annotations

from attrs import frozen

from stasis.modes import Mode

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_PORT",
    "DEFAULT_UPSTREAM",
    "Config",
    "listen_on_port",
]

DEFAULT_PORT = 4000
DEFAULT_DB = "./stasis-cache.db"
DEFAULT_UPSTREAM = "https://api.openai.com"
DEFAULT_UPSTREAM_TIMEOUT = 600.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


def listen_on_port(port: int) -> str:
    """The endpoint for ``--port``: loopback only, since a cache of API answers is private."""
    return f"tcp:{port}:interface=127.0.0.1"


@frozen
class Config:
    """Everything a :class:`~stasis.service.StasisService` needs to know."""

    listen: str = listen_on_port(DEFAULT_PORT)
    upstream: str = DEFAULT_UPSTREAM
    db: str = DEFAULT_DB
    mode: Mode = Mode.CACHE
    log_level: str = "info"
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
