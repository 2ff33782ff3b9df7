"""
The daemon's settings, as one frozen value built from options or by an embedder.

A :class:`Config` checks itself when it is made: a value that could not work
(an unknown mode, a negative size, an endpoint description Twisted cannot
parse, an upstream that is not an http(s) URL) is a :class:`ConfigError`
naming the field, raised where the mistake was made rather than when the
daemon starts, or, worse, quietly turned into something else.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from attrs import Attribute, field, frozen
from hyperlink import URL, URLParseError

from stasis.ignore import IgnorePath, parse_ignore, usable
from stasis.keys import CredentialScope
from stasis.log import LOG_FORMATS, LOG_LEVELS
from stasis.modes import MAX_SAMPLES, Mode
from stasis.providers import PROVIDERS
from stasis.routing import Routes

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_DB",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_PORT",
    "DEFAULT_SHUTDOWN_GRACE",
    "PROVIDER_NAMES",
    "Config",
    "ConfigError",
    "ConfigTypeError",
    "listen_on_port",
    "parse_upstream",
    "upstream_url",
]

DEFAULT_PORT = 4000
DEFAULT_DB = "./stasis-cache.db"
DEFAULT_UPSTREAM_TIMEOUT = 600.0
#: Why these two values: see :mod:`stasis.web.deadlines`.
DEFAULT_HEADER_TIMEOUT = 15.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MEMORY_CACHE_BYTES = 64 * 1024 * 1024
#: Seconds a stop lets the requests and streams in flight finish: a chat
#: answer streams for a few seconds, and systemd's own stop timeout is 90 s.
DEFAULT_SHUTDOWN_GRACE = 10.0

#: The names ``--upstream NAME=URL`` accepts.
PROVIDER_NAMES = [provider.name for provider in PROVIDERS]


class ConfigError(ValueError):
    """
    A setting that cannot work. ``field`` names the :class:`Config` field and
    ``problem`` completes a sentence about it, so that the command line can
    say the same thing about its option (``--max-body must be …``).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class ConfigTypeError(ConfigError, TypeError):
    """A setting of the wrong type (a float where a whole number is needed, say)."""


#: The listen backlog of the endpoint ``--port`` makes (nginx's default). Twisted's
#: own, 50, overflows when a few hundred clients connect at once: the kernel then
#: drops their SYNs, and each waits a second or more before it tries again.
LISTEN_BACKLOG = 511


def listen_on_port(port: int) -> str:
    """The endpoint for ``--port``: loopback only, since a cache of API answers is private."""
    return f"tcp:{port}:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"


def upstream_url(value: str, field: str = "upstream") -> str:
    """``value`` checked as an upstream base URL, without a trailing slash."""
    try:
        url = URL.from_text(value)
    except URLParseError as e:
        raise ConfigError(field, f"{value!r} is not a URL: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(field, f"{value!r} must be an http:// or https:// URL with a host")
    if url.query or url.fragment:
        raise ConfigError(field, f"{value!r} must not carry a query or fragment")
    return value.rstrip("/")


def _provider_name(value: str, given: str) -> str:
    name = value.strip().lower()
    if name not in PROVIDER_NAMES:
        raise ConfigError(
            "upstreams",
            f"{given!r}: unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}",
        )
    return name


def parse_upstream(value: str) -> tuple[str | None, str]:
    """``URL`` or ``NAME=URL`` as (provider name or None, URL); :class:`ConfigError` if neither."""
    name, equals, url = value.partition("=")
    if equals and "://" not in name:
        return _provider_name(name, value), upstream_url(url.strip(), "upstreams")
    return None, upstream_url(value.strip())


# Converters and validators: each names its field in the error it raises.


def _mode(value: Mode | str) -> Mode:
    if isinstance(value, Mode):
        return value
    if not isinstance(value, str):
        raise ConfigTypeError("mode", f"must be a Mode or a mode name, not {value!r}")
    try:
        return Mode.parse(value)
    except ValueError:
        raise ConfigError(
            "mode", f"must be one of {', '.join(Mode.names())}, not {value!r}"
        ) from None


def _credential_scope(value: CredentialScope | str) -> CredentialScope:
    if isinstance(value, CredentialScope):
        return value
    try:
        return CredentialScope(value)
    except ValueError:
        raise ConfigError(
            "credential_scope",
            f"must be one of {', '.join(CredentialScope.names())}, not {value!r}",
        ) from None


def _ready_file(_: Any, attribute: Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    folder = os.path.dirname(os.path.abspath(value)) if value else ""
    if not value or not os.path.isdir(folder):
        raise ConfigError(attribute.name, f"{value!r}: no such folder to write it in")


#: The shortest ``--admin-token`` accepted: it guards the cache against the network.
MIN_ADMIN_TOKEN = 16
#: What a token may be made of: visible ASCII, as an HTTP header carries it unchanged.
_TOKEN = re.compile(r"[!-~]+")


def _admin_token(_: Any, attribute: Attribute[str | None], value: str | None) -> None:
    # The value itself is never in the message: it is a secret.
    if value is None:
        return
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ConfigError(attribute.name, "must be visible ASCII characters without spaces")
    if len(value) < MIN_ADMIN_TOKEN:
        raise ConfigError(attribute.name, f"must be at least {MIN_ADMIN_TOKEN} characters long")


def _log_level(value: str) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return value.lower()


def _log_format(value: str) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_FORMATS:
        raise ConfigError("log_format", f"must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return value.lower()


def _upstream(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigTypeError("upstream", f"must be a URL or None, not {value!r}")
    return upstream_url(value.strip())


def _upstreams(value: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigTypeError("upstreams", f"must map provider names to URLs, not {value!r}")
    return {
        _provider_name(name, f"{name}={url}"): upstream_url(url.strip(), "upstreams")
        for name, url in value.items()
    }


def _db(_: Any, attribute: Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(attribute.name, f"must name a file, not {value!r}")


def _whole(minimum: int, unit: str = "bytes") -> Any:
    def check(_: Any, attribute: Attribute[int], value: int) -> None:
        # bool is an int to Python, and a float would be silently truncated.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigTypeError(
                attribute.name, f"must be a whole number of {unit}, not {value!r}"
            )
        if value < minimum:
            bound = "greater than 0" if minimum == 1 else f"at least {minimum}"
            raise ConfigError(attribute.name, f"must be {bound}, not {value}")

    return check


def _seconds(_: Any, attribute: Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigTypeError(attribute.name, f"must be a number of seconds, not {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(attribute.name, f"must be greater than 0, not {value}")


def _grace(_: Any, attribute: Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigTypeError(attribute.name, f"must be a number of seconds, not {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(attribute.name, f"must be 0 or more seconds, not {value}")


def _optional(check: Any) -> Any:
    def optional(instance: Any, attribute: Attribute[Any], value: Any) -> None:
        if value is not None:
            check(instance, attribute, value)

    return optional


def _ignore_rules(value: Any) -> tuple[IgnorePath, ...]:
    if isinstance(value, str):
        raise ConfigTypeError("ignore", f"must be a list of JSON paths, not the string {value!r}")
    rules: list[IgnorePath] = []
    for rule in value:
        try:
            rules.append(usable(rule if isinstance(rule, IgnorePath) else parse_ignore(rule)))
        except (ValueError, TypeError) as e:
            raise ConfigError("ignore", str(e)) from None
    return tuple(rules)


#: An HTTP header name (RFC 9110 token characters).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigTypeError(
            "credential_headers", f"must be a list of header names, not the string {value!r}"
        )
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError("credential_headers", f"{name!r} is not an HTTP header name")
        if name.lower() not in names:
            names.append(name.lower())
    return tuple(names)


#: More processes than this on one machine is a typo, not a plan.
MAX_WORKERS = 256


def _workers(_: Any, attribute: Attribute[int], value: int) -> None:
    _whole(1, "processes")(_, attribute, value)
    if value > MAX_WORKERS:
        raise ConfigError(attribute.name, f"must be at most {MAX_WORKERS}, not {value}")


def _samples(_: Any, attribute: Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(attribute.name, f"must be a whole number, not {value!r}")
    if not 1 <= value <= MAX_SAMPLES:
        raise ConfigError(attribute.name, f"must be from 1 to {MAX_SAMPLES}, not {value}")


class _ProbeReactor:
    """
    A stand-in reactor for checking an endpoint description without listening.

    Twisted's own parser builds the endpoint against it, so a description is
    accepted exactly when ``serverFromString`` would accept it; the built-in
    endpoints' ``listen`` then only hands their address to this object, which
    writes it down instead of binding anything.
    """

    def __init__(self) -> None:
        self.tcp_ports: list[int] = []
        self.unix_paths: list[str] = []

    def listenTCP(self, port: int, *args: Any, **kwargs: Any) -> None:
        self.tcp_ports.append(port)

    def listenUNIX(self, address: str, *args: Any, **kwargs: Any) -> None:
        self.unix_paths.append(address)


def _listen(_: Any, attribute: Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise ConfigTypeError("listen", f"must be an endpoint description, not {value!r}")
    # Imported here: the endpoint machinery is not needed to import stasis.config.
    from twisted.internet.endpoints import (
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
        UNIXServerEndpoint,
        serverFromString,
    )

    example = "e.g. tcp:4000:interface=127.0.0.1 or unix:/run/stasis.sock"
    probe = _ProbeReactor()
    try:
        endpoint = serverFromString(probe, value)
    except Exception as e:  # any parser, including a plugin's, may raise anything
        if value.startswith("systemd:") and isinstance(e, IndexError | KeyError):
            # The systemd parser looks the socket up as it parses.
            # Twisted finds a socket only with all three variables (a
            # .socket unit sets them): LISTEN_FDNAMES too, since systemd 227.
            problem = (
                f"{value!r}: systemd passed this process no such socket (start it from a "
                ".socket unit: it sets LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES)"
            )
        else:
            problem = f"{value!r} is not a Twisted server endpoint ({e}); {example}"
        raise ConfigError("listen", problem) from None
    # Only Twisted's own endpoints are known to just call the reactor here.
    if isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint | UNIXServerEndpoint):
        endpoint.listen(None)  # type: ignore[no-untyped-call]
    for port in probe.tcp_ports:
        if not 0 <= port <= 65535:
            raise ConfigError("listen", f"{value!r}: port {port} is not between 0 and 65535")
    for path in probe.unix_paths:
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise ConfigError("listen", f"{value!r}: the socket's folder {folder} does not exist")


@frozen
class Config:
    """
    Everything a :class:`~stasis.service.StasisService` needs to know.

    Checked at construction; a bad value is a :class:`ConfigError` (a
    ``ValueError``; a :class:`ConfigTypeError`, also a ``TypeError``, for a
    value of the wrong type) whose message starts with the field's name.
    """

    #: A Twisted server endpoint description.
    listen: str = field(default=listen_on_port(DEFAULT_PORT), validator=_listen)
    #: One upstream for every request (the original tool's behaviour); None: route by provider.
    upstream: str | None = field(default=None, converter=_upstream)
    #: Per-provider upstreams (``--upstream NAME=URL``), overriding the above.
    upstreams: Mapping[str, str] = field(factory=dict, converter=_upstreams)
    #: The SQLite cache file.
    db: str = field(default=DEFAULT_DB, validator=_db)
    #: The mode of requests that choose none: a :class:`Mode` or its name.
    mode: Mode = field(default=Mode.CACHE, converter=_mode)
    #: stasis's log level, one of :data:`stasis.log.LOG_LEVELS`. Applied only by
    #: the daemon (``twistd -n stasis``, ``stasis start``): an embedded service
    #: leaves its host's logging alone (see :func:`stasis.log.set_log_level`).
    log_level: str = field(default="info", converter=_log_level)
    #: How the daemon writes its log: ``text`` (twistd's classic lines) or
    #: ``json`` (one object a line); like the level, applied only by the daemon.
    log_format: str = field(default="text", converter=_log_format)
    #: Seconds to wait for the upstream's headers, and then for each piece of its body.
    upstream_timeout: float = field(default=DEFAULT_UPSTREAM_TIMEOUT, validator=_seconds)
    #: Seconds a client may take to send a request's line and headers, from the
    #: first byte of the request; then it is answered 408 and closed.
    header_timeout: float = field(default=DEFAULT_HEADER_TIMEOUT, validator=_seconds)
    #: Seconds a client may take to send a request's body, and one more for every
    #: :data:`~stasis.web.deadlines.BODY_MIN_RATE` bytes of it that arrived;
    #: then it is answered 408 and closed.
    body_timeout: float = field(default=DEFAULT_BODY_TIMEOUT, validator=_seconds)
    #: The largest request body accepted, in bytes; a larger one is a 413.
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, validator=_whole(1))
    #: Bytes of hot entries kept in memory in front of the database; 0 turns it off.
    memory_cache_bytes: int = field(default=DEFAULT_MEMORY_CACHE_BYTES, validator=_whole(0))
    #: Whose entries a request reads and writes: the caller's credential's
    #: (falling back to the shared scope on a lookup), or the shared scope only.
    credential_scope: CredentialScope = field(
        default=CredentialScope.CALLER, converter=_credential_scope
    )
    #: Seconds a new entry stays valid (``X-Stasis-TTL`` overrides it); None: for ever.
    ttl: float | None = field(default=None, validator=_optional(_seconds))
    #: Seconds after expiry an entry may still answer when the upstream fails.
    stale_if_error: float | None = field(default=None, validator=_optional(_seconds))
    #: Bound on the bytes the entries take in the database; None: no bound.
    max_size_bytes: int | None = field(default=None, validator=_optional(_whole(1)))
    #: Bound on the number of entries; None: no bound.
    max_entries: int | None = field(default=None, validator=_optional(_whole(1, "entries")))
    #: Fields left out of every cacheable request's key (``--ignore``).
    ignore: tuple[IgnorePath, ...] = field(default=(), converter=_ignore_rules)
    #: Headers that carry a credential beyond the usual ones (``--credential-header``):
    #: fingerprinted into the key, never stored. Lower-cased.
    credential_headers: tuple[str, ...] = field(default=(), converter=_header_names)
    #: How many answers a key keeps by default (``X-Stasis-Samples`` overrides it).
    samples: int = field(default=1, validator=_samples)
    #: A file the daemon writes its URL to once it listens (None: none).
    ready_file: str | None = field(default=None, validator=_ready_file)
    #: Processes accepting on the one listening socket, sharing one cache
    #: (``--workers``); 1 serves in the daemon's own process.
    workers: int = field(default=1, validator=_workers)
    #: Seconds a stop (SIGTERM, Ctrl-C, ``stopService``) lets the requests and
    #: streams in flight finish, once the port is closed, before it cuts the
    #: rest off and closes the database; 0 cuts them at once.
    shutdown_grace: float = field(default=DEFAULT_SHUTDOWN_GRACE, validator=_grace)
    #: The token a write to the admin API may bring (``Authorization: Bearer``);
    #: None: one is made up at start, accepted only on a loopback listener.
    #: Kept out of the repr: a Config in a log line or traceback shows no secret.
    admin_token: str | None = field(default=None, repr=False, validator=_admin_token)

    @property
    def routes(self) -> Routes:
        return Routes(everything=self.upstream, overrides=dict(self.upstreams))
