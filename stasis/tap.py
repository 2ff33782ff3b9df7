"""
twistd's view of stasis: command-line options in, a :class:`StasisService` out.

``twistd -n stasis --port 4000`` and ``stasis start`` both come through here;
options become a frozen :class:`~stasis.config.Config` in one place, so the
two ways of starting the daemon cannot drift apart. The Config checks the
values; this module only turns text into values and the Config's complaints
into the option names a user typed.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any, NoReturn, Protocol, cast

from attrs import define
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python import usage
from twisted.python.failure import Failure

from stasis.config import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_DB,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MEMORY_CACHE_BYTES,
    DEFAULT_PORT,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_UPSTREAM_TIMEOUT,
    PROVIDER_NAMES,
    Config,
    ConfigError,
    listen_on_port,
    parse_upstream,
)
from stasis.keys import CredentialScope
from stasis.log import LOG_LEVELS, logger, set_log_format, set_log_level, writes_directly
from stasis.modes import Mode
from stasis.notify import notify
from stasis.open_files import raise_open_files_limit
from stasis.service import StartupError, StasisService, Worker, describe_port
from stasis.sizes import parse_size
from stasis.times import parse_duration
from stasis.web.deadlines import BODY_MIN_RATE
from stasis.workers.supervisor import Supervisor

__all__ = ["Options", "fail_usage", "makeService", "worker_service"]

log = logger("stasis.service")

#: The option a user typed for each Config field, to name it in errors.
_OPTION_FOR_FIELD = {
    "admin_token": "--admin-token",
    "listen": "--listen",
    "upstream": "--upstream",
    "upstreams": "--upstream",
    "db": "--db",
    "mode": "--mode",
    "log_level": "--log-level",
    "log_format": "--log-format",
    "upstream_timeout": "--upstream-timeout",
    "header_timeout": "--header-timeout",
    "body_timeout": "--body-timeout",
    "max_body_bytes": "--max-body",
    "memory_cache_bytes": "--memory-cache",
    "credential_scope": "--credential-scope",
    "ttl": "--ttl",
    "stale_if_error": "--stale-if-error",
    "max_size_bytes": "--max-size",
    "max_entries": "--max-entries",
    "ignore": "--ignore",
    "credential_headers": "--credential-header",
    "samples": "--samples",
    "ready_file": "--ready-file",
    "workers": "--workers",
    "shutdown_grace": "--shutdown-grace",
}


def _usage_error(error: ConfigError) -> usage.UsageError:
    return usage.UsageError(f"{_OPTION_FOR_FIELD.get(error.field, error.field)} {error.problem}")


def _coerce(function: Callable[[str], Any], doc: str = "") -> Callable[[str], Any]:
    # twistd appends a coerce's coerceDoc to the option's help.
    function.coerceDoc = doc  # type: ignore[attr-defined]
    return function


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"--port must be a number, not {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, not {port}")
    return port


def _seconds(name: str) -> Callable[[str], Any]:
    def coerce(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None

    return _coerce(coerce)


def _named(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, its complaint prefixed with the option's name."""

    def coerce(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None

    return _coerce(coerce)


def _count(name: str) -> Callable[[str], Any]:
    def coerce(value: str) -> int:
        # int(" 1_000 ") would pass: only plain digits.
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"{name} must be a whole number, not {value!r}")
        return int(value)

    return _coerce(coerce)


def fail_usage(message: str, command: str = "stasis") -> NoReturn:
    """Report a command-line mistake the way every stasis command does, and exit 2."""
    message = message.removeprefix("Parameter type enforcement failed: ")
    sys.stderr.write(f"{command}: error: {message} (see --help)\n")
    raise SystemExit(2)


class Options(usage.Options):
    """
    The daemon's options (the original stasis-proxy CLI's, plus a few).

    ``environ`` (default: ``os.environ``) supplies ``$STASIS_DB``,
    ``$STASIS_UPSTREAM`` and ``$STASIS_ADMIN_TOKEN``, read when options are
    made and parsed, not when this module is imported. Once parsed, :attr:`config` is the Config.
    """

    synopsis = "[options]"
    longdesc = (
        "A caching proxy for LLM APIs. Point an SDK's base URL at it; identical calls "
        "are answered from a local SQLite file."
    )

    optParameters = [
        ["port", "p", DEFAULT_PORT, "TCP port to listen on, on 127.0.0.1.", _coerce(_port)],
        [
            "listen",
            None,
            None,
            "Twisted server endpoint to listen on instead of --port, e.g. "
            "tcp:4000:interface=0.0.0.0, unix:/run/stasis.sock, systemd:domain=INET:index=0.",
        ],
        ["db", "d", DEFAULT_DB, "SQLite cache database file ($STASIS_DB)."],
        [
            "mode",
            None,
            Mode.CACHE.value,
            f"Default cache mode for requests without X-Stasis-Mode: {', '.join(Mode.names())}.",
        ],
        ["log-level", "l", "info", f"Log level: {', '.join(LOG_LEVELS)}."],
        [
            "log-format",
            None,
            "text",
            "Log format: text, or json (one JSON object a line, for log shippers; under "
            "twistd with --logger stasis.log.observer).",
        ],
        [
            "upstream-timeout",
            None,
            DEFAULT_UPSTREAM_TIMEOUT,
            "Seconds to wait for the upstream's response headers, and then for each piece of "
            "its body.",
            _seconds("--upstream-timeout"),
        ],
        [
            "header-timeout",
            None,
            DEFAULT_HEADER_TIMEOUT,
            "Seconds a client may take to send a request's line and headers, from their first "
            "byte; a slower one is answered 408 and closed.",
            _seconds("--header-timeout"),
        ],
        [
            "body-timeout",
            None,
            DEFAULT_BODY_TIMEOUT,
            f"Seconds a client may take to send a request's body, plus one for every "
            f"{BODY_MIN_RATE} bytes of it received (a slow upload of a big body is not cut); "
            "a slower one is answered 408 and closed.",
            _seconds("--body-timeout"),
        ],
        [
            "memory-cache",
            None,
            DEFAULT_MEMORY_CACHE_BYTES,
            "Bytes of hot entries kept in memory in front of the database (0: none; or a "
            "size: 64MB).",
            _named("--memory-cache", parse_size),
        ],
        [
            "max-body",
            None,
            DEFAULT_MAX_BODY_BYTES,
            "Largest request body accepted (bytes, or a size: 64MB).",
            _named("--max-body", parse_size),
        ],
        [
            "ttl",
            None,
            None,
            "How long new entries stay valid: 90s, 12h, 7d (default: for ever); X-Stasis-TTL "
            "overrides it per request.",
            _named("--ttl", parse_duration),
        ],
        [
            "stale-if-error",
            None,
            None,
            "Serve an entry expired up to this long ago (90s, 12h, 7d) when the upstream fails "
            "(refused, reset, timeout, 5xx, 429), as STALE.",
            _named("--stale-if-error", parse_duration),
        ],
        [
            "max-size",
            None,
            None,
            "Keep the entries under this many bytes (500MB, 2GB), evicting the least recently "
            "used in the background.",
            _named("--max-size", parse_size),
        ],
        [
            "max-entries",
            None,
            None,
            "Keep at most this many entries, evicting the least recently used in the background.",
            _count("--max-entries"),
        ],
        [
            "samples",
            None,
            1,
            "How many different answers a key keeps (X-Stasis-Samples overrides it); after "
            "that they are replayed in turn.",
            _count("--samples"),
        ],
        [
            "credential-scope",
            None,
            CredentialScope.CALLER.value,
            "Whose entries a request reads and writes: 'caller' (each API key its own, "
            "falling back to shared entries on a lookup) or 'shared' (one cache for every key).",
        ],
        [
            "ready-file",
            None,
            None,
            "Write the daemon's URL to this file once it listens (with --port 0, how a "
            "script learns the port).",
        ],
        [
            "workers",
            None,
            1,
            "Processes serving the one listening socket and sharing the cache: up to one per "
            "core (a worker that dies is restarted; /stats adds them all up).",
            _count("--workers"),
        ],
        [
            "shutdown-grace",
            None,
            DEFAULT_SHUTDOWN_GRACE,
            "Seconds a stop (SIGTERM, Ctrl-C) lets the requests and streams in flight finish, "
            "once the port is closed; then the rest are cut off, the database is closed and "
            "the daemon exits with status 0.",
            _seconds("--shutdown-grace"),
        ],
        [
            "admin-token",
            None,
            None,
            "Token the admin API (/_stasis/api/) accepts for changes, as 'Authorization: Bearer "
            "TOKEN' ($STASIS_ADMIN_TOKEN keeps it out of ps); needed for changes when listening "
            "beyond loopback. Default: a random one, printed at start.",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._environ = os.environ if environ is None else environ
        self["db"] = self._environ.get("STASIS_DB") or DEFAULT_DB
        self["admin-token"] = self._environ.get("STASIS_ADMIN_TOKEN") or None
        self["upstream"] = None
        self["upstreams"] = {}
        self["ignore"] = []
        self["credential-headers"] = []
        self._config: Config | None = None

    def opt_version(self) -> None:
        """Print the version and exit."""
        from stasis import __version__

        print(f"stasis {__version__.public()}")
        raise SystemExit(0)

    opt_v = opt_version
    # usage.Options leaves -h out for fear of clashing with a "host" option; stasis has none.
    opt_h = usage.Options.opt_help

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

    def opt_upstream(self, value: str) -> None:
        # The help text is set below, in one line: twistd keeps a docstring's indentation.
        try:
            name, url = parse_upstream(value)
        except ConfigError as e:
            raise _usage_error(e) from None
        if name is None:
            if self["upstream"] is not None:
                raise usage.UsageError("--upstream URL (for everything) may be given once")
            self["upstream"] = url
        else:
            self["upstreams"][name] = url

    opt_upstream.__doc__ = (
        "Where requests go: a URL for everything, or NAME=URL for one provider "
        f"({', '.join(sorted(PROVIDER_NAMES))}); repeatable. Default: each provider's public "
        "API ($STASIS_UPSTREAM). A URL may carry a path prefix."
    )
    opt_u = opt_upstream

    def opt_ignore(self, value: str) -> None:
        # Checked with the other values, when the Config is made.
        self["ignore"].append(value)

    opt_ignore.__doc__ = (
        "A JSON path left out of every cacheable request's key: user, metadata.user_id, "
        "messages[*].id; repeatable (X-Stasis-Ignore adds more per request)."
    )

    def opt_credential_header(self, value: str) -> None:
        self["credential-headers"].append(value)

    opt_credential_header.__doc__ = (
        "A header that carries a credential besides Authorization, x-api-key, api-key, "
        "x-goog-api-key, Proxy-Authorization and Cookie (a gateway's own): fingerprinted "
        "into the key, never stored; repeatable."
    )

    def postOptions(self) -> None:
        # twistd applies a coerce only to values given on the command line, so
        # the port (whose default is a number) is checked here too.
        try:
            port = _port(str(self["port"]))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        environment = self._environ.get("STASIS_UPSTREAM")
        if environment and self["upstream"] is None and not self["upstreams"]:
            for value in environment.split(","):
                self.opt_upstream(value)
        try:
            self._config = Config(
                listen=self["listen"] or listen_on_port(port),
                upstream=self["upstream"],
                upstreams=dict(self["upstreams"]),
                db=self["db"],
                mode=self["mode"],
                log_level=self["log-level"],
                log_format=self["log-format"],
                upstream_timeout=self["upstream-timeout"],
                header_timeout=self["header-timeout"],
                body_timeout=self["body-timeout"],
                max_body_bytes=self["max-body"],
                memory_cache_bytes=self["memory-cache"],
                credential_scope=self["credential-scope"],
                ttl=self["ttl"],
                stale_if_error=self["stale-if-error"],
                max_size_bytes=self["max-size"],
                max_entries=self["max-entries"],
                ignore=tuple(self["ignore"]),
                credential_headers=tuple(self["credential-headers"]),
                samples=int(self["samples"]),
                ready_file=self["ready-file"],
                workers=int(self["workers"]),
                shutdown_grace=self["shutdown-grace"],
                admin_token=self["admin-token"],
            )
        except ConfigError as e:
            raise _usage_error(e) from None

    @property
    def config(self) -> Config:
        """The Config the options describe; only once they are parsed."""
        if self._config is None:
            raise RuntimeError("the options have not been parsed")
        return self._config


def _original_stderr() -> IO[str] | None:
    """
    Where a start-up failure goes: the stderr the daemon was started with, or
    None when that is the null device (twistd daemonizing, or ``2>/dev/null``).

    twistd points ``sys.stderr`` into its log (stdout, or the log file) once
    logging starts; a start-up failure is for the person who started it.
    """
    stderr = sys.__stderr__
    try:
        discarded = stderr is None or os.path.samestat(
            os.fstat(stderr.fileno()), os.stat(os.devnull)
        )
    except (OSError, ValueError):
        discarded = False
    return None if discarded else stderr


def _exit_status_at_interpreter_exit(status: int) -> None:
    """
    Make the process exit with ``status`` once twistd has finished.

    twistd returns normally once its reactor stops, and its script exits 0;
    nothing else lets a failure that happens while the reactor runs choose
    the exit status. The streams are flushed first, as os._exit would not.
    """
    import atexit

    def exit_now() -> None:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        os._exit(status)

    atexit.register(exit_now)


@define
class _CommandLine:
    """
    How the daemon, as a whole process, reports a start-up failure: one line
    on stderr and exit status 1, also when it fails only once the reactor
    runs (daemonized, twistd reports it).
    """

    stderr: Callable[[], IO[str] | None] = _original_stderr
    exit_status: Callable[[int], None] = _exit_status_at_interpreter_exit

    def fail(self, error: StartupError) -> NoReturn:
        stderr = self.stderr()
        if stderr is None:
            # Daemonized: twistd's first process waits for the daemon's word
            # on a pipe, which twistd writes for an Exception, and prints it;
            # a SystemExit would leave that process waiting forever.
            raise error
        stderr.write(f"stasis: {error}\n")
        raise SystemExit(1)

    def failed_late(self, failure: Failure, reactor: Any) -> None:
        # The service has logged it too, for a daemon whose stderr is discarded.
        stderr = self.stderr()
        if stderr is not None:
            stderr.write(f"stasis: {failure.getErrorMessage()}\n")
        self.exit_status(1)
        if reactor.running:
            reactor.stop()


class _Listening(Protocol):
    config: Config
    reactor: Any
    port: Any
    _command_line: _CommandLine

    def when_listening(self) -> Deferred[Any]: ...

    def admin_token_to_announce(self) -> str | None: ...

    def hurry(self) -> None: ...


class _OnTheCommandLine(Service):
    """
    The start-up of a service that is the whole process under twistd: it
    applies ``--log-level``, and a start-up failure ends the process with one
    line (see :class:`_CommandLine`). Put first among the bases.
    """

    def privilegedStartService(self) -> None:
        this = cast(_Listening, self)
        set_log_level(this.config.log_level)
        if this.config.log_format == "json" and not writes_directly():
            log.warn(
                "--log-format json needs stasis's log observer: "
                "twistd --logger stasis.log.observer -n stasis … (stasis start uses it)"
            )
        _allow_open_files(this.reactor)
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
        except StartupError as e:
            this._command_line.fail(e)

    def startService(self) -> None:
        this = cast(_Listening, self)
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except StartupError as e:
            this._command_line.fail(e)
        this.when_listening().addCallbacks(
            self._ready, this._command_line.failed_late, errbackArgs=(this.reactor,)
        )

    def _ready(self, port: object) -> None:
        """Tell systemd the daemon serves (a worker leaves that to its supervisor)."""
        this = cast(_Listening, self)
        if getattr(self, "worker", None) is not None:
            return
        where = describe_port(this.port, this.config.listen) if this.port is not None else ""
        notify("READY=1", f"STATUS=serving on {where}")
        token = this.admin_token_to_announce()
        stderr = this._command_line.stderr()
        if token is not None and stderr is not None and this.config.log_format != "json":
            # On stderr, not in the log: a log file is read by more people
            # (and shippers) than the one who started the daemon. Not beside
            # JSON lines either, which are for machines: there, --admin-token.
            stderr.write(f"stasis: admin token: {token}\n")
            stderr.flush()

    def stopService(self) -> Deferred[None]:
        """
        Stop as the service does (draining first), telling systemd; a clean
        stop makes the process exit with status 0.

        On SIGTERM or SIGINT, twistd (and so ``stasis start``) ends by
        killing itself with that signal once the reactor stops, so a daemon
        that stopped exactly as asked reported failure (-15, or 130 in a
        shell) to systemd, launchd and scripts. The reactor keeps the signal
        in ``_exitSignal`` for that (Twisted's own, not public API: without
        it, the exit status stays the signal's).
        """
        this = cast(_Listening, self)
        notify("STOPPING=1", "STATUS=stopping: letting the requests in flight finish")
        if getattr(this.reactor, "_exitSignal", None) is not None:
            _hurry_on_another_signal(this)
        stopped: Deferred[None] = maybeDeferred(super().stopService)

        def clean(result: None) -> None:
            if getattr(this.reactor, "_exitSignal", None) is not None:
                this.reactor._exitSignal = None
            return result

        return stopped.addCallback(clean)


class _CommandLineService(_OnTheCommandLine, StasisService):
    """
    For twistd, where stasis is the whole process (or one of its workers):
    started as :class:`_OnTheCommandLine` says, and the heap start-up built is
    settled.
    """

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        stderr: Callable[[], IO[str] | None] = _original_stderr,
        exit_status: Callable[[int], None] = _exit_status_at_interpreter_exit,
        worker: Worker | None = None,
        drain_seconds: float | None = None,
    ) -> None:
        self._command_line = _CommandLine(stderr, exit_status)
        try:
            StasisService.__init__(
                self, config, reactor, worker=worker, drain_seconds=drain_seconds
            )
        except StartupError as e:
            self._command_line.fail(e)

    def startService(self) -> None:
        super().startService()
        _settle_the_heap()


class _CommandLineSupervisor(_OnTheCommandLine, Supervisor):
    """``--workers N``'s supervisor as the whole process (see :class:`_OnTheCommandLine`)."""

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        stderr: Callable[[], IO[str] | None] = _original_stderr,
        exit_status: Callable[[int], None] = _exit_status_at_interpreter_exit,
    ) -> None:
        Supervisor.__init__(self, config, reactor)
        self._command_line = _CommandLine(stderr, exit_status)


def _hurry_on_another_signal(service: _Listening) -> None:
    """
    Make a second Ctrl-C or SIGTERM, during a stop a signal began, cut off
    what is in flight at once (:meth:`StasisService.hurry`).

    The reactor's own handlers would call ``reactor.stop()`` again, which
    only logs a ``ReactorNotRunning`` traceback and leaves the user waiting
    out the whole grace.
    """

    def again(number: int, frame: object) -> None:
        log.info(
            "received {signal} again: cutting off what is in flight",
            signal=signal.Signals(number).name,
        )
        service.reactor.callFromThread(service.hurry)

    for number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: the reactor's stay
            signal.signal(number, again)


#: An open-file limit below this is worth a word at start-up.
_FEW_FILES = 1024


def _allow_open_files(reactor: Any) -> None:
    """
    Let the daemon hold as many connections as the system allows
    (:mod:`stasis.open_files`), and say so if that is still few.
    """
    if reactor is None:
        from twisted.internet import reactor
    limit = raise_open_files_limit(reactor)
    if limit is not None and 0 < limit < _FEW_FILES:
        log.warn(
            "only {limit} files may be open at once (ulimit -Hn): past about that many "
            "connections, new clients are reset",
            limit=limit,
        )


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
    """
    The daemon's service: stasis itself, or with ``--workers N`` above 1, the
    supervisor of N processes each running it (:mod:`stasis.workers`).
    """
    config = options.config
    # Before twistd starts logging, which it does once the service is made:
    # the observer it then asks stasis.log for writes this format.
    set_log_format(config.log_format)
    if config.workers > 1:
        supervisor: IService = _CommandLineSupervisor(config)
        return supervisor
    service: IService = _CommandLineService(config)
    return service


def worker_service(config: Config, worker: Worker, drain_seconds: float) -> StasisService:
    """
    The service one ``--workers`` process runs: the daemon's own, told which
    worker it is. A start-up failure raises :class:`StartupError` (the worker
    tells its supervisor, which tells the user once for all workers).
    """
    return _CommandLineService(
        config, stderr=lambda: None, worker=worker, drain_seconds=drain_seconds
    )
