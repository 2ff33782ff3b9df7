"""
Service wiring: the store, the site and the listening endpoint as one service.

This is what twistd runs and what an embedder builds: ``StasisService(config)``
added to an application (or started by hand) listens and opens the database
when started, and closes the port, the upstream connections and the database
when stopped.

Its two children are the store (opened on start, closed on stop) and the
endpoint (a ``StreamServerEndpointService``). The port is bound first (in
``privilegedStartService``, which twistd calls before ``startService``), so a
port that is taken stops the start-up before the database file is created.

What the daemon is made of is built in two functions, :func:`build_store` and
:func:`build_front`: the only places that know the concrete store and web
classes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred
from twisted.internet.defer import TimeoutError as DrainTimeout
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer

from stasis.cache import CacheEngine, Counters
from stasis.cache.housekeeping import Bounds, Housekeeping
from stasis.config import Config
from stasis.log import logger
from stasis.metrics import Metrics
from stasis.store import Store, StoreError, open_store
from stasis.upstream import UpstreamClient, make_client
from stasis.upstream.aws import AwsSigner
from stasis.web.admin.access import AdminAccess, new_token
from stasis.web.admin.api import AdminApi
from stasis.web.admin.pages import AdminPages
from stasis.web.deadlines import Deadlines
from stasis.web.prepared import PreparedHeads
from stasis.web.proxy import ProxyResource
from stasis.web.root import Root
from stasis.web.site import StasisSite
from stasis.web.traffic import Traffic
from stasis.web.ui import UIResource

__all__ = [
    "Front",
    "StartupError",
    "StasisService",
    "Worker",
    "build_front",
    "build_store",
    "cannot_listen",
    "describe_port",
    "write_ready_file",
]

log = logger("stasis.service")

#: How long a stop waits for the connections it aborted to be gone: one
#: reactor turn is usually enough; this bounds a misbehaving one.
_CUT_OFF_SECONDS = 1.0


class StartupError(Exception):
    """The daemon cannot start: the database or the listening address is unusable."""


@frozen
class Worker:
    """
    What a :class:`StasisService` is told when it is one of the processes
    ``--workers`` runs (see :mod:`stasis.workers`) instead of the whole daemon.
    """

    #: This worker's slot, 0 to N-1: named by ``/health`` and in its log lines.
    index: int
    #: The listening socket the supervisor made, adopted instead of binding ``--listen``.
    endpoint: IStreamServerEndpoint
    #: Where this worker counts (its slot of the shared tally).
    counters: Counters
    #: Every worker's counters added up: what ``/stats`` reports.
    totals: Counters
    #: The admin token the supervisor made up (no ``--admin-token``), the
    #: same in every worker.
    admin_token: str | None = None

    @property
    def keeps_house(self) -> bool:
        """
        Whether this worker prunes and evicts: only the first does. The work
        is the whole database's, so one worker doing it is enough; N would
        repeat each round and queue behind each other for SQLite's one
        writer. It learns of the other workers' puts from the database's
        change feed, a second later at most, and so checks the bounds as a
        lone daemon would.
        """
        return self.index == 0


# The seam: what the daemon is made of. Only these two functions name the
# concrete store and web classes.


def build_store(config: Config, reactor: Any) -> Store:
    """The cache store for ``config`` (``--db``: a path, later a URL), not yet open."""
    return open_store(config.db, reactor, workers=config.workers)


@frozen
class Front:
    """What :func:`build_front` makes: the engine, the site to listen with, and how to close it."""

    engine: CacheEngine
    site: Site
    #: Who may use the admin API; told where the site listens once it does.
    access: AdminAccess
    #: Closes what the site holds open (the upstream connection pool), once
    #: the port no longer accepts connections.
    close: Callable[[], Deferred[None]]

    @property
    def counters(self) -> Counters:
        return self.engine.counters


def build_front(config: Config, reactor: Any, store: Store, worker: Worker | None = None) -> Front:
    """
    The cache engine over ``store``, and the site serving it with ``/health``
    and ``/stats``; ``worker`` when it serves as one of several processes.
    """
    http, pool = make_client(reactor)
    counters = Counters() if worker is None else worker.counters
    bounds = Bounds(max_bytes=config.max_size_bytes, max_entries=config.max_entries)
    housekeeping = None
    if worker is None or worker.keeps_house:
        housekeeping = Housekeeping(
            store, reactor, counters, bounds, keep_expired=config.stale_if_error or 0.0
        )
    engine = CacheEngine(
        store=store,
        upstream=UpstreamClient(http, reactor, config.upstream_timeout),
        routes=config.routes,
        clock=reactor,
        signer=AwsSigner(),
        default_mode=config.mode,
        credential_scope=config.credential_scope,
        credential_headers=config.credential_headers,
        ignore=config.ignore,
        default_ttl=config.ttl,
        stale_if_error=config.stale_if_error,
        samples=config.samples,
        memory_budget=config.memory_cache_bytes,
        counters=counters,
        housekeeping=housekeeping,
    )
    heads = PreparedHeads()
    store.changes.subscribe(heads.on_change)
    proxy = ProxyResource(engine, heads)
    totals = counters if worker is None else worker.totals
    traffic = Traffic(reactor)
    metrics = Metrics(totals, traffic)
    access = AdminAccess(
        token=config.admin_token or (worker and worker.admin_token) or new_token(),
        given=config.admin_token is not None,
    )
    admin = AdminPages(
        access, AdminApi(store, totals, traffic, bounds, engine.in_thread), UIResource()
    )
    site = StasisSite(
        Root(
            proxy,
            store,
            totals,
            bounds,
            worker=None if worker is None else worker.index,
            metrics=metrics,
            admin=admin,
        ),
        max_body_bytes=config.max_body_bytes,
        upstream=proxy,
        deadlines=Deadlines(head=config.header_timeout, body=config.body_timeout),
        reactor=reactor,
    )
    site.credential_headers = config.credential_headers
    site.traffic = traffic
    return Front(
        engine=engine,
        site=site,
        access=access,
        close=pool.closeCachedConnections,
    )


class _CacheService(Service):
    """
    Opens the store when started (synchronously: raises if unusable) and
    starts the engine on it; stops the engine (its last hit counts written),
    then closes the store.
    """

    def __init__(self, store: Store, engine: CacheEngine) -> None:
        self.store = store
        self.engine = engine

    def startService(self) -> None:
        self.store.open()
        self.engine.start()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        try:
            await self.engine.close()
        finally:
            await self.store.close()


def cannot_listen(description: str, failure: Failure) -> StartupError:
    """The start-up error for endpoint ``description``, whose listen failed with ``failure``."""
    if failure.check(CancelledError):
        reason = "stopped before it was listening"
    elif isinstance(failure.value, CannotListenError) and isinstance(
        failure.value.socketError, OSError
    ):
        # "Address already in use", not "Couldn't listen on …: [Errno 98] …".
        strerror = failure.value.socketError.strerror or str(failure.value.socketError)
        reason = strerror[:1].lower() + strerror[1:]
    else:
        reason = failure.getErrorMessage()
    return StartupError(f"cannot listen on {description}: {reason}")


@implementer(IStreamServerEndpoint)
@define
class _ReportingEndpoint:
    """
    Wraps an endpoint to keep the outcome of its ``listen``.

    ``StreamServerEndpointService`` logs a failed listen and forgets it; this
    remembers it for :meth:`outcome`, and hands the service ``None`` instead
    of the failure (which its ``stopService`` takes as "nothing to close").
    """

    endpoint: IStreamServerEndpoint
    description: str
    attempted: bool = field(default=False, init=False)
    _result: IListeningPort | Failure | None = field(default=None, init=False)
    _waiting: list[Deferred[IListeningPort]] = field(factory=list, init=False)

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        self.attempted = True
        listening: Deferred[IListeningPort] = maybeDeferred(self.endpoint.listen, factory)
        # On failure the result is None, which the interface does not foresee
        # but StreamServerEndpointService.stopService handles.
        return listening.addCallbacks(self._listening, self._failed)  # type: ignore[arg-type]

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self._settle(port)
        return port

    def _failed(self, failure: Failure) -> None:
        self._settle(Failure(cannot_listen(self.description, failure)))

    def _settle(self, result: IListeningPort | Failure) -> None:
        self._result = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._fire(d)

    def _fire(self, d: Deferred[IListeningPort]) -> None:
        if isinstance(self._result, Failure):
            d.errback(self._result)
        elif self._result is not None:
            d.callback(self._result)

    @property
    def failure(self) -> Failure | None:
        return self._result if isinstance(self._result, Failure) else None

    def outcome(self) -> Deferred[IListeningPort]:
        """A new Deferred for the port, or the :class:`StartupError` failure."""
        d: Deferred[IListeningPort] = Deferred()
        if self._result is None:
            self._waiting.append(d)
        else:
            self._fire(d)
        return d


def describe_port(port: IListeningPort, listen: str) -> str:
    """Where ``port`` (made from the endpoint description ``listen``) listens, as a URL."""
    address = port.getHost()
    scheme = "https" if listen.startswith("ssl:") else "http"
    if isinstance(address, IPv6Address):
        return f"{scheme}://[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{scheme}://{address.host}:{address.port}"
    if isinstance(address, UNIXAddress) and address.name is not None:
        name = address.name
        return "unix:" + (name.decode("utf-8", "replace") if isinstance(name, bytes) else name)
    return str(address)


def write_ready_file(path: str, url: str) -> None:
    """Write ``url`` whole or not at all: a script polling the file never reads half of it."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".stasis-ready-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(url + "\n")
        os.replace(temporary, path)
    except OSError as e:
        log.error("cannot write the ready file {path}: {error}", path=path, error=e)


class StasisService(MultiService):
    """
    The stasis daemon as a Twisted service.

    ``reactor`` is the reactor it listens, times and connects with (the
    global one by default). Once started, :attr:`port` is the listening port
    (useful with ``tcp:0``), and :meth:`when_listening` reports an endpoint
    that listens, or fails to, only later. Logging is left to the host: the
    level in ``config`` is applied only by the daemon (``twistd -n stasis``,
    ``stasis start``).

    It serves in its own process: ``config.workers`` is the daemon's to act
    on (:func:`stasis.tap.makeService`), which runs this service in each
    worker process with ``worker`` set. ``drain_seconds`` (default:
    ``config.shutdown_grace``) is how long a stop lets the requests and
    streams in flight finish (after the port is closed) before it cuts off
    what is left and closes the database; 0 waits for none.
    """

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        worker: Worker | None = None,
        drain_seconds: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.worker = worker
        self.drain_seconds = config.shutdown_grace if drain_seconds is None else drain_seconds
        #: While a stop waits for the requests in flight: what :meth:`hurry` cancels.
        self._draining: Deferred[None] | None = None
        try:
            self.store = build_store(config, reactor)
        except StoreError as e:  # --db names what this installation cannot open
            raise StartupError(str(e)) from None
        self._front = build_front(config, reactor, self.store, worker)
        self.engine = self._front.engine
        self.site = self._front.site
        self.counters = self._front.counters
        self.port: IListeningPort | None = None
        endpoint = serverFromString(reactor, config.listen) if worker is None else worker.endpoint
        self._endpoint = _ReportingEndpoint(endpoint, config.listen)
        self._endpoint.outcome().addCallbacks(self._listening, self._not_listening)
        # Children in the order they depend on each other; stopped in reverse.
        self._store_service = _CacheService(self.store, self.engine)
        self._store_service.setServiceParent(self)  # type: ignore[no-untyped-call]
        self._listener = StreamServerEndpointService(self._endpoint, self.site)
        self._listener.setServiceParent(self)

    def when_listening(self) -> Deferred[IListeningPort]:
        """
        Fires with the listening port, or fails with :class:`StartupError`.

        A port that cannot be bound at once makes :meth:`startService` raise;
        this also reports an endpoint that listens (or fails to) later.
        """
        return self._endpoint.outcome()

    def privilegedStartService(self) -> None:
        """
        Bind the port (twistd calls this first, before dropping privileges);
        :class:`StartupError` if it cannot be.
        """
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        failure = self._endpoint.failure
        if failure is not None:
            failure.raiseException()

    def startService(self) -> None:
        """
        Listen (unless :meth:`privilegedStartService` did), then open the
        database; either failing raises :class:`StartupError`.

        Both happen before the reactor serves anything: a daemon that cannot
        cache or cannot be reached should say so and stop, not limp.
        """
        if self.config.ready_file and self.worker is None:
            # A file left by an earlier run must not tell a script this one is ready.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.config.ready_file)
        if not self._endpoint.attempted:
            self.privilegedStartService()
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except StoreError as e:
            self.running = False
            self._listener.stopService()
            raise StartupError(str(e)) from e
        if self.port is not None:
            self._log_listening(self.port)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self._front.access.listening_on(port.getHost())
        if self.running:  # listening only now, after start-up
            self._log_listening(port)

    def admin_token_to_announce(self) -> str | None:
        """
        The admin token to print at start: the one made up when no
        ``--admin-token`` was given, once it listens on loopback only.
        """
        return None if self.worker is not None else self._front.access.announced()

    def _not_listening(self, failure: Failure) -> None:
        # Failing at once, it is startService's StartupError; this is for later.
        if self.running:
            log.error("{error}", error=failure.getErrorMessage())

    def _log_listening(self, port: IListeningPort) -> None:
        if self.worker is not None:
            # The supervisor says where the daemon listens, once for all workers.
            log.info("worker {index} serving (pid {pid})", index=self.worker.index, pid=os.getpid())
            return
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, describe_port(port, self.config.listen))
        log.info(
            "stasis listening on {where}, upstream {upstream}, cache {db}, mode {mode}",
            where=describe_port(port, self.config.listen),
            upstream=self.config.routes.describe(),
            db=self.store.location,
            mode=self.config.mode.value,
        )

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, let the requests in flight finish (``drain_seconds``),
        then close the upstream connections, then the database.
        """
        return ensureDeferred(self._stop())

    async def _drain(self) -> None:
        site = self.site
        if not isinstance(site, StasisSite):  # pragma: no cover - build_front makes one
            return
        idle = site.when_idle()
        if site.in_flight:
            log.info(
                "stopping: letting {count} request(s) in flight finish", count=len(site.in_flight)
            )
        self._draining = idle.addTimeout(self.drain_seconds, self.reactor)
        try:
            await self._draining
        except DrainTimeout:
            log.warn(
                "stopping: {count} request(s) still in flight after {seconds:g}s are cut off",
                count=len(site.in_flight),
                seconds=self.drain_seconds,
            )
            await self._cut_off(site)
        except CancelledError:  # hurry()
            log.warn(
                "stopping now: {count} request(s) still in flight are cut off",
                count=len(site.in_flight),
            )
            await self._cut_off(site)
        finally:
            self._draining = None

    def hurry(self) -> None:
        """
        Cut off the requests still in flight now, not at the end of the
        grace: a stop under way then finishes at once (the daemon calls it
        on a second Ctrl-C or SIGTERM). Does nothing unless a stop waits.
        """
        if self._draining is not None:
            self._draining.cancel()

    async def _cut_off(self, site: StasisSite) -> None:
        """
        Abort the connections of the requests still in flight, and wait (a
        moment) until they are gone.

        Left to the reactor's own shutdown, a stream cut off only after the
        database closed would still be relaying, and could finish into a
        closed store; aborted now, each relay sees its client gone, cancels
        its upstream call and stores nothing, as when a client hangs up.
        """
        for request in list(site.in_flight):
            channel = request.channel
            if channel is None:
                continue
            # An HTTP/2 stream aborts itself (RST_STREAM); an HTTP/1.1
            # channel aborts its TCP connection.
            abort = getattr(channel, "abortConnection", None)
            if abort is None:
                transport = channel.transport
                abort = None if transport is None else getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
        with contextlib.suppress(DrainTimeout):
            await site.when_idle().addTimeout(_CUT_OFF_SECONDS, self.reactor)

    async def _stop(self) -> None:
        # MultiService would stop the children all at once; the database must
        # outlive the port, or a request accepted meanwhile finds it closed.
        Service.stopService(self)
        if self._endpoint.attempted:
            await self._listener.stopService()
        self.port = None
        await self._drain()
        await self._front.close()
        if self._store_service.running:
            await self._store_service.stopService()
