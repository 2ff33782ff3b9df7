"""
twistd's view of stasis: command-line options in, a :class:`StasisService` out.

``twistd -n stasis --port 4000`` and ``stasis start`` both come through here;
options become a frozen :class:`~stasis.config.Config` in one place, so the
two ways of starting the daemon cannot drift apart.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, NoReturn

from hyperlink import URL, URLParseError
from twisted.application.service import IService, Service
from twisted.python import usage

from stasis.config import (
    DEFAULT_DB,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MEMORY_CACHE_BYTES,
    DEFAULT_PORT,
    DEFAULT_UPSTREAM_TIMEOUT,
    Config,
    listen_on_port,
)
from stasis.log import LOG_LEVELS
from stasis.modes import Mode
from stasis.providers import PROVIDERS
from stasis.service import StartupError, StasisService

__all__ = ["Options", "makeService"]


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"--port must be a number, not {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, not {port}")
    return port


def _positive(name: str) -> Any:
    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, not {value!r}") from None
        if number <= 0:
            raise ValueError(f"{name} must be greater than 0, not {value}")
        return number

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def _url(value: str) -> str:
    try:
        url = URL.from_text(value)
    except URLParseError as e:
        raise ValueError(f"--upstream {value!r} is not a URL: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"--upstream {value!r} must be an http:// or https:// URL with a host")
    if url.query or url.fragment:
        raise ValueError(f"--upstream {value!r} must not carry a query or fragment")
    return value.rstrip("/")


def parse_upstream(value: str) -> tuple[str | None, str]:
    """``URL`` or ``NAME=URL`` as (provider name or None, URL); ``ValueError`` if neither."""
    name, equals, url = value.partition("=")
    if equals and "://" not in name:
        name = name.strip().lower()
        if name not in PROVIDER_NAMES:
            raise ValueError(
                f"--upstream {value!r}: unknown provider {name!r}; "
                f"known: {', '.join(PROVIDER_NAMES)}"
            )
        return name, _url(url.strip())
    return None, _url(value.strip())


def _count(name: str) -> Any:
    def coerce(value: str) -> int:
        if not value.isdigit():
            raise ValueError(f"{name} must be a whole number of bytes, not {value!r}")
        return int(value)

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def _choice(name: str, choices: list[str]) -> Any:
    def coerce(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value.lower()

    coerce.coerceDoc = f"One of: {', '.join(choices)}."  # type: ignore[attr-defined]
    return coerce


_port.coerceDoc = ""  # type: ignore[attr-defined]

PROVIDER_NAMES = [provider.name for provider in PROVIDERS]


def fail_usage(message: str, command: str = "stasis") -> NoReturn:
    """Report a command-line mistake the way every stasis command does, and exit 2."""
    message = message.removeprefix("Parameter type enforcement failed: ")
    sys.stderr.write(f"{command}: error: {message} (see --help)\n")
    raise SystemExit(2)


class Options(usage.Options):
    """The daemon's options (the original stasis-proxy CLI's, plus a few)."""

    synopsis = "[options]"
    longdesc = (
        "A caching proxy for LLM APIs. Point an SDK's base URL at it; identical calls "
        "are answered from a local SQLite file."
    )

    optParameters = [
        ["port", "p", DEFAULT_PORT, "TCP port to listen on, on 127.0.0.1.", _port],
        [
            "listen",
            None,
            None,
            "Twisted server endpoint to listen on instead of --port, e.g. "
            "tcp:4000:interface=0.0.0.0, unix:/run/stasis.sock, systemd:domain=INET:index=0.",
        ],
        [
            "db",
            "d",
            os.environ.get("STASIS_DB", DEFAULT_DB),
            "SQLite cache database file ($STASIS_DB).",
        ],
        [
            "mode",
            None,
            Mode.CACHE.value,
            "Default cache mode for requests without X-Stasis-Mode.",
            _choice("--mode", Mode.names()),
        ],
        [
            "log-level",
            "l",
            "info",
            "Log level.",
            _choice("--log-level", list(LOG_LEVELS)),
        ],
        [
            "upstream-timeout",
            None,
            DEFAULT_UPSTREAM_TIMEOUT,
            "Seconds to wait for the upstream's response headers, and then for each piece of "
            "its body.",
            _positive("--upstream-timeout"),
        ],
        [
            "memory-cache",
            None,
            DEFAULT_MEMORY_CACHE_BYTES,
            "Bytes of hot entries kept in memory in front of the database (0: none).",
            _count("--memory-cache"),
        ],
        [
            "max-body",
            None,
            DEFAULT_MAX_BODY_BYTES,
            "Largest request body accepted, in bytes.",
            _positive("--max-body"),
        ],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        from stasis import __version__

        print(f"stasis {__version__.public()}")
        raise SystemExit(0)

    opt_v = opt_version

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse, turning a bad option into one line on stderr and exit status 2.

        twistd would print the whole usage text above the error; a user who
        mistyped one value needs only to be told which.
        """
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            fail_usage(str(e))

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["upstream"] = None
        self["upstreams"] = {}

    def opt_upstream(self, value: str) -> None:
        # The help text is set below, in one line: twistd keeps a docstring's indentation.
        try:
            name, url = parse_upstream(value)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if name is None:
            if self["upstream"] is not None:
                raise usage.UsageError("--upstream URL (for everything) may be given once")
            self["upstream"] = url
        else:
            self["upstreams"][name] = url

    opt_upstream.__doc__ = (
        "Where requests go: a URL for everything, or NAME=URL for one provider (openai, "
        "anthropic, bedrock, gemini, azure); repeatable. Default: each provider's public API "
        "($STASIS_UPSTREAM). A URL may carry a path prefix."
    )
    opt_u = opt_upstream

    def postOptions(self) -> None:
        # twistd applies a coerce only to values given on the command line, so
        # the defaults (which may come from the environment) are checked here.
        try:
            self["port"] = _port(str(self["port"]))
            environment = os.environ.get("STASIS_UPSTREAM")
            if environment and self["upstream"] is None and not self["upstreams"]:
                for value in environment.split(","):
                    self.opt_upstream(value)
        except (ValueError, usage.UsageError) as e:
            raise usage.UsageError(str(e)) from None
        if not self["db"]:
            raise usage.UsageError("--db must name a file")

    def to_config(self) -> Config:
        return Config(
            listen=self["listen"] or listen_on_port(self["port"]),
            upstream=self["upstream"],
            upstreams=dict(self["upstreams"]),
            db=self["db"],
            mode=Mode.parse(self["mode"]),
            log_level=self["log-level"],
            upstream_timeout=float(self["upstream-timeout"]),
            max_body_bytes=int(self["max-body"]),
            memory_cache_bytes=int(self["memory-cache"]),
        )


class _CommandLineService(StasisService):
    """
    For twistd, where stasis is the whole process: a start-up failure is one
    line on stderr and exit status 1, and the heap start-up built is settled.
    """

    def startService(self) -> None:
        try:
            super().startService()
        except StartupError as e:
            raise SystemExit(f"stasis: {e}") from None
        _settle_the_heap()


def _settle_the_heap() -> None:
    """
    Exempt what start-up made (modules, classes, the reactor: ~50,000 objects)
    from the garbage collector's full passes.

    A full pass walks every tracked object; on a small machine walking these
    takes 15-40 ms, every few seconds under load, and every request in flight
    waits for it. They live as long as the process does anyway. Only the
    daemon does this: an application that embeds the service owns its heap.
    """
    gc.collect()
    gc.freeze()


def makeService(options: Options) -> IService:
    service: Service = _CommandLineService(options.to_config())
    return service
