"""
Embedding: the service API, in-process on the real reactor (pytest-twisted).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet.address import IPv4Address

from stasis import Config, Mode, StartupError, StasisService
from stasis.tap import Options, makeService
from tests.fake_upstream import FakeUpstream

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
