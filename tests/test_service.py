"""
Embedding: the service API, in-process on the real reactor (pytest-twisted), and its
wiring in memory (a MemoryReactor to listen with, a store that records what is done to it).
"""

from __future__ import annotations

import errno
import gc
import io
import json
import threading
from pathlib import Path

import attrs
import pytest
import pytest_twisted
import treq
from attrs import define, field
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from stasis import Config, Mode, StartupError, StasisService
from stasis import service as service_module
from stasis.log import enabled, set_log_level
from stasis.store import StoreError
from stasis.tap import Options, _CommandLineService, makeService
from tests.fake_upstream import FakeUpstream, Received, Reply
from tests.memory_store import MemoryStore
from tests.waiting import wait_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest_twisted.ensureDeferred
async def test_an_embedded_service_caches_and_stops_cleanly(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    service = StasisService(
        Config(listen="tcp:0:interface=127.0.0.1", db=str(tmp_path / "c.db"), upstream=upstream.url)
    )
    service.startService()
    try:
        assert service.port is not None
        address = service.port.getHost()
        assert isinstance(address, IPv4Address)
        url = f"http://127.0.0.1:{address.port}/v1/chat/completions"
        statuses = []
        for _ in range(2):
            response = await treq.post(
                url,
                json.dumps(CHAT).encode(),
                headers={"Authorization": "Bearer sk-x", "Content-Type": "application/json"},
                persistent=False,
            )
            body = json.loads(await response.content())
            statuses.append(response.headers.getRawHeaders("x-stasis-status")[0])
        assert statuses == ["MISS", "HIT"]
        assert body["object"] == "chat.completion"
        assert len(upstream.calls()) == 1
        assert (service.counters.hits, service.counters.misses) == (1, 1)
    finally:
        await service.stopService()
    assert service.port is None
    # The database is closed and complete: a new service reads the entry back.
    again = StasisService(
        Config(listen="tcp:0:interface=127.0.0.1", db=str(tmp_path / "c.db"), mode=Mode.REPLAY)
    )
    again.startService()
    try:
        stats = await again.store.stats()
        assert stats.entries == 1
        assert stats.tokens_saved == 18
    finally:
        await again.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stop_with_drain_seconds_lets_a_request_in_flight_finish(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """What each ``--workers`` process does on SIGTERM: no new connections, in flight finish."""
    gate = threading.Event()

    def held(received: Received) -> Reply:
        assert gate.wait(20), "the test never let the upstream answer"
        return upstream.default_reply(received)

    upstream.handler = held
    config = Config(
        listen="tcp:0:interface=127.0.0.1", db=str(tmp_path / "c.db"), upstream=upstream.url
    )
    service = StasisService(config, drain_seconds=10.0)
    service.startService()
    assert service.port is not None
    address = service.port.getHost()
    assert isinstance(address, IPv4Address)
    answer = treq.post(
        f"http://127.0.0.1:{address.port}/v1/chat/completions",
        json.dumps(CHAT).encode(),
        headers={"Authorization": "Bearer sk-x", "Content-Type": "application/json"},
        persistent=False,
    )
    await wait_for(lambda: len(upstream.calls()) == 1)
    stopped = service.stopService()
    await wait_for(lambda: service.port is None)  # it no longer accepts
    assert not stopped.called
    gate.set()
    response = await answer
    assert response.code == 200
    assert response.headers.getRawHeaders("x-stasis-status") == ["MISS"]
    assert json.loads(await response.content())["object"] == "chat.completion"
    await stopped
    # Stored before it was answered, and the database closed cleanly after.
    again = StasisService(attrs.evolve(config, mode=Mode.REPLAY))
    again.startService()
    try:
        assert (await again.store.stats()).entries == 1
    finally:
        await again.stopService()


def test_an_unusable_database_is_a_startup_error(tmp_path: Path) -> None:
    service = StasisService(Config(listen="tcp:0", db=str(tmp_path / "no" / "such" / "dir.db")))
    with pytest.raises(StartupError, match="cannot open the cache database"):
        service.startService()
    assert not service.running


@pytest_twisted.ensureDeferred
async def test_the_daemon_settles_its_heap_and_an_embedded_service_leaves_it_alone(
    tmp_path: Path,
) -> None:
    """Objects start-up made are frozen out of full GC passes, but only in stasis's own process."""
    gc.unfreeze()
    embedded = StasisService(
        Config(listen="tcp:0:interface=127.0.0.1", db=str(tmp_path / "e.db"), mode=Mode.REPLAY)
    )
    embedded.startService()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        await embedded.stopService()
    options = Options()
    options.parseOptions(["--port", "0", "--db", str(tmp_path / "d.db"), "--mode", "replay"])
    daemon = makeService(options)
    daemon.startService()
    try:
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        await daemon.stopService()


# The wiring, in memory: a MemoryReactor to listen with, a store that records.


@define
class RecordingStore(MemoryStore):
    """A store that records what the service does with it: open it, close it."""

    fail_open: str | None = None
    events: list[str] = field(factory=list)

    def open(self) -> None:
        if self.fail_open is not None:
            raise StoreError(self.fail_open)
        self.events.append("open")

    async def close(self) -> None:
        self.events.append("close")


@implementer(IStreamServerEndpoint)
class LateEndpoint:
    """An endpoint whose listen() answers only when the test says so."""

    def __init__(self) -> None:
        self.pending: Deferred[IListeningPort] = Deferred()

    def listen(self, factory: object) -> Deferred[IListeningPort]:
        return self.pending


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> RecordingStore:
    recording = RecordingStore(Clock())
    monkeypatch.setattr(service_module, "build_store", lambda config, reactor: recording)
    return recording


@pytest.fixture
def late(monkeypatch: pytest.MonkeyPatch) -> LateEndpoint:
    endpoint = LateEndpoint()
    monkeypatch.setattr(service_module, "serverFromString", lambda reactor, text: endpoint)
    return endpoint


def _busy(port: int) -> CannotListenError:
    return CannotListenError("127.0.0.1", port, OSError(errno.EADDRINUSE, "Address already in use"))


def test_the_store_and_the_endpoint_are_children_and_the_reactor_passed_in_listens(
    store: RecordingStore,
) -> None:
    reactor = MemoryReactorClock()
    service = StasisService(Config(listen="tcp:4321:interface=127.0.0.1"), reactor)
    children = list(service)
    assert [type(child).__name__ for child in children] == [
        "_CacheService",
        "StreamServerEndpointService",
    ]
    service.startService()
    assert service.running and all(child.running for child in children)
    [(port, factory, _backlog, interface)] = reactor.tcpServers
    assert (port, factory, interface) == (4321, service.site, "127.0.0.1")
    assert store.events == ["open"]
    assert service.port is not None
    listening = service.when_listening()
    assert listening.called and listening.result is service.port
    stopped = service.stopService()
    assert stopped.called
    assert store.events == ["open", "close"]
    assert service.port is None
    assert not any(child.running for child in children)


def test_the_ready_file_says_the_url_once_listening_and_never_a_stale_one(
    store: RecordingStore, tmp_path: Path
) -> None:
    ready = tmp_path / "url"
    ready.write_text("http://127.0.0.1:1\n")  # left by an earlier run
    reactor = RaisingMemoryReactor(_busy(4321))
    service = StasisService(
        Config(listen="tcp:4321:interface=127.0.0.1", ready_file=str(ready)), reactor
    )
    with pytest.raises(StartupError):
        service.startService()
    assert not ready.exists()
    service = StasisService(
        Config(listen="tcp:4321:interface=127.0.0.1", ready_file=str(ready)), MemoryReactorClock()
    )
    service.startService()
    # (The memory reactor's port says it is on 0.0.0.0.)
    assert ready.read_text() == "http://0.0.0.0:4321\n"
    assert [p.name for p in tmp_path.iterdir()] == ["url"]  # no temporary file left behind
    service.stopService()


def test_a_taken_port_is_a_startup_error_before_the_store_is_opened(store: RecordingStore) -> None:
    service = StasisService(Config(listen="tcp:4000"), RaisingMemoryReactor(_busy(4000)))
    with pytest.raises(StartupError) as raised:
        service.startService()
    assert str(raised.value) == "cannot listen on tcp:4000: address already in use"
    assert store.events == []
    assert not service.running
    # The service can still be stopped (twistd's shutdown does so) without error.
    assert service.stopService().called


def test_twistd_binds_in_privileged_start_and_opens_the_store_in_start(
    store: RecordingStore,
) -> None:
    reactor = MemoryReactorClock()
    service = StasisService(Config(listen="tcp:0"), reactor)
    service.privilegedStartService()
    assert len(reactor.tcpServers) == 1
    assert store.events == []
    service.startService()
    assert len(reactor.tcpServers) == 1  # not a second time
    assert store.events == ["open"]


def test_an_unusable_store_closes_the_port_again(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = RecordingStore(Clock(), fail_open="cannot open the cache database 'x.db': no")
    monkeypatch.setattr(service_module, "build_store", lambda config, reactor: failing)
    service = StasisService(Config(listen="tcp:0"), MemoryReactorClock())
    service.privilegedStartService()
    port = service.port
    assert port is not None
    closed: list[bool] = []
    monkeypatch.setattr(port, "stopListening", lambda: closed.append(True))
    with pytest.raises(StartupError, match="cannot open the cache database 'x\\.db': no"):
        service.startService()
    assert closed == [True]
    assert not service.running


def test_a_late_listen_failure_is_reported(store: RecordingStore, late: LateEndpoint) -> None:
    service = StasisService(Config(listen="tcp:4000"), MemoryReactorClock())
    service.startService()  # the endpoint has not answered yet
    assert service.running
    failures: list[Failure] = []
    service.when_listening().addErrback(failures.append)
    assert failures == []
    late.pending.errback(_busy(4000))
    # Asked again afterwards, the answer is the same.
    service.when_listening().addErrback(failures.append)
    assert [failure.type for failure in failures] == [StartupError, StartupError]
    assert {failure.getErrorMessage() for failure in failures} == {
        "cannot listen on tcp:4000: address already in use"
    }
    assert service.port is None


def test_a_late_listen_failure_ends_the_daemon_with_exit_status_1(
    store: RecordingStore, late: LateEndpoint
) -> None:
    reactor = MemoryReactorClock()
    stderr = io.StringIO()
    statuses: list[int] = []
    daemon = _CommandLineService(
        Config(listen="tcp:4000"), reactor, stderr=lambda: stderr, exit_status=statuses.append
    )
    daemon.privilegedStartService()
    try:
        daemon.startService()
    finally:
        gc.unfreeze()
    reactor.run()
    late.pending.errback(_busy(4000))
    assert stderr.getvalue() == "stasis: cannot listen on tcp:4000: address already in use\n"
    assert statuses == [1]
    assert reactor.hasStopped


def test_a_taken_port_stops_the_daemon_with_one_line_on_stderr(store: RecordingStore) -> None:
    stderr = io.StringIO()
    daemon = _CommandLineService(
        Config(listen="tcp:4000"), RaisingMemoryReactor(_busy(4000)), stderr=lambda: stderr
    )
    with pytest.raises(SystemExit) as exited:
        daemon.privilegedStartService()
    assert exited.value.code == 1
    assert stderr.getvalue() == "stasis: cannot listen on tcp:4000: address already in use\n"
    assert store.events == []


def test_a_daemon_whose_stderr_is_discarded_raises_the_startup_error_for_twistd(
    store: RecordingStore,
) -> None:
    daemon = _CommandLineService(
        Config(listen="tcp:4000"), RaisingMemoryReactor(_busy(4000)), stderr=lambda: None
    )
    with pytest.raises(StartupError, match="address already in use"):
        daemon.privilegedStartService()


def test_an_embedded_service_leaves_the_log_level_alone_and_the_daemon_applies_it(
    store: RecordingStore,
) -> None:
    config = Config(listen="tcp:0", log_level="error")
    try:
        set_log_level("debug")
        embedded = StasisService(config, MemoryReactorClock())
        embedded.startService()
        assert enabled("stasis.proxy", LogLevel.debug)
        daemon = _CommandLineService(config, MemoryReactorClock())
        try:
            daemon.startService()
        finally:
            gc.unfreeze()
        assert not enabled("stasis.proxy", LogLevel.warn)
        assert enabled("stasis.proxy", LogLevel.error)
    finally:
        set_log_level("info")
