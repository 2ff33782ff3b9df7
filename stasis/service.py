"""
Service wiring: the store, the site and the listening endpoint as one service.

This is what twistd runs and what an embedder builds: ``StasisService(config)``
added to an application (or started by hand) listens when started and closes
the database and the upstream connections when stopped.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort

from stasis.cache import CacheEngine
from stasis.config import Config
from stasis.log import logger, set_log_level
from stasis.store import Store, StoreError, open_store
from stasis.upstream import UpstreamClient, make_client
from stasis.upstream.aws import AwsSigner
from stasis.web.prepared import PreparedHeads
from stasis.web.proxy import ProxyResource
from stasis.web.root import Root
from stasis.web.site import StasisSite

__all__ = ["StartupError", "StasisService"]

log = logger("stasis.service")


class StartupError(Exception):
    """The daemon cannot start: the database or the listening address is unusable."""


class StasisService(MultiService):
    """
    The stasis daemon as a Twisted service.

    ``reactor`` is injectable for tests; ``port`` is the listening port once
    started (useful with ``tcp:0``).
    """

    def __init__(self, config: Config, reactor: Any = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.store: Store = open_store(config.db, reactor)
        http, self._pool = make_client(reactor)
        self.engine = CacheEngine(
            store=self.store,
            upstream=UpstreamClient(http, reactor, config.upstream_timeout),
            routes=config.routes,
            clock=reactor,
            signer=AwsSigner(),
            default_mode=config.mode,
            memory_budget=config.memory_cache_bytes,
        )
        self.counters = self.engine.counters
        heads = PreparedHeads()
        self.store.changes.subscribe(heads.on_change)
        self.proxy = ProxyResource(self.engine, heads)
        self.site = StasisSite(
            Root(self.proxy, self.store, self.counters),
            max_body_bytes=config.max_body_bytes,
            reactor=reactor,
        )
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        """
        Open the database, then listen; either failing raises :class:`StartupError`.

        Both happen before the reactor serves anything: a daemon that cannot
        cache or cannot be reached should say so and stop, not limp.
        """
        set_log_level(self.config.log_level)
        try:
            self.store.open()
        except StoreError as e:
            raise StartupError(str(e)) from e
        self.engine.start()
        endpoint = serverFromString(self.reactor, self.config.listen)
        listening = endpoint.listen(self.site)
        failures: list[Any] = []
        listening.addCallbacks(self._listening, failures.append)
        if failures:
            ensureDeferred(self.store.close())
            raise StartupError(
                f"cannot listen on {self.config.listen}: {failures[0].getErrorMessage()}"
            )
        super().startService()  # type: ignore[no-untyped-call]

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        where = (
            f"http://{address.host}:{address.port}"
            if isinstance(address, IPv4Address | IPv6Address)
            else str(address)
        )
        log.info(
            "stasis listening on {where}, upstream {upstream}, cache {db}, mode {mode}",
            where=where,
            upstream=self.config.routes.describe(),
            db=self.config.db,
            mode=self.config.mode.value,
        )

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        stopped: Deferred[None] | None = super().stopService()  # type: ignore[no-untyped-call]
        if stopped is not None:
            await stopped
        if self.port is not None:
            closing = self.port.stopListening()
            self.port = None
            if closing is not None:
                await closing
        await self._pool.closeCachedConnections()
        await self.engine.close()
        await self.store.close()
