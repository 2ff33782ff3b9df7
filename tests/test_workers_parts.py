"""
``--workers``' parts in memory: the shared tally, the restart back-off, the seat a
worker is told, and what ``/health`` and ``/stats`` say in a worker.
"""

from __future__ import annotations

import json
import os
import pickle

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource

from stasis import Config
from stasis.cache import Counters
from stasis.service import Worker, build_front
from stasis.web.root import Root
from stasis.workers.restarts import FIRST_DELAY, LONGEST_DELAY, STABLE_SECONDS, Backoff
from stasis.workers.seat import Seat, SeatError
from stasis.workers.tally import FIELDS, Tally, make_tally_file
from tests.memory_store import MemoryStore


@pytest.fixture
def tally_fd() -> int:
    fd = make_tally_file(3)
    yield fd
    os.close(fd)


def test_each_worker_counts_in_its_slot_and_the_total_adds_them_up(tally_fd: int) -> None:
    tally = Tally.map(tally_fd, 3)
    first, third = tally.slot(0), tally.slot(2)
    first.hits += 2
    first.tokens_saved += 10**12
    third.hits += 1
    third.misses += 1
    third.evictions += 4
    total = tally.total()
    assert (first.hits, first.misses, third.hits) == (2, 0, 1)
    assert (total.hits, total.misses, total.tokens_saved, total.evictions) == (3, 1, 10**12, 4)
    assert total.hit_rate == 0.75
    # Read afresh each time, not a snapshot.
    third.misses += 3
    assert total.misses == 4
    with pytest.raises(AttributeError):
        total.hits = 0  # type: ignore[misc]


def test_a_mapping_of_the_same_file_sees_the_same_numbers_and_continues_them(
    tally_fd: int,
) -> None:
    """A restarted worker maps the file again: its slot goes on from where it was."""
    Tally.map(tally_fd, 3).slot(1).hits += 5
    again = Tally.map(tally_fd, 3).slot(1)
    assert again.hits == 5
    again.hits += 1
    assert Tally.map(tally_fd, 3).total().hits == 6


def test_every_counter_has_a_cell(tally_fd: int) -> None:
    assert tuple(a.name for a in attrs.fields(Counters)) == FIELDS
    slot = Tally.map(tally_fd, 3).slot(0)
    for number, name in enumerate(FIELDS, start=1):
        setattr(slot, name, number)
    assert attrs.asdict(slot) == {name: n for n, name in enumerate(FIELDS, start=1)}
    assert attrs.asdict(Tally.map(tally_fd, 3).total()) == attrs.asdict(slot)


def test_a_tally_too_small_or_a_slot_out_of_range_is_refused(tally_fd: int) -> None:
    with pytest.raises(ValueError, match="too small for 4 workers"):
        Tally.map(tally_fd, 4)
    with pytest.raises(IndexError):
        Tally.map(tally_fd, 3).slot(3)


def test_quick_deaths_back_off_doubling_and_a_long_life_resets_it() -> None:
    backoff = Backoff()
    delays = [backoff.delay(uptime=0.5) for _ in range(7)]
    assert delays == [FIRST_DELAY, 2, 4, 8, 16, LONGEST_DELAY, LONGEST_DELAY]
    assert backoff.delay(uptime=STABLE_SECONDS) == 0.0
    assert backoff.delay(uptime=1.0) == FIRST_DELAY


def _pipe_with(data: bytes) -> int:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    return read


def test_a_seat_travels_whole_over_a_pipe() -> None:
    seat = Seat(
        config=Config(db="x.db", ignore=("user",), workers=2),
        index=1,
        workers=2,
        family=2,
        drain_seconds=25.0,
    )
    fd = _pipe_with(seat.to_bytes())
    try:
        assert Seat.read(fd) == seat
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "stdin ended before a seat was read"),
        (b"\x00\x00\x00\x10abc", "stdin ended before a seat was read"),
        (len(pickle.dumps(3)).to_bytes(4, "big") + pickle.dumps(3), "stdin held a int"),
    ],
)
def test_a_worker_without_a_seat_says_so(data: bytes, problem: str) -> None:
    fd = _pipe_with(data)
    try:
        with pytest.raises(SeatError, match=problem):
            Seat.read(fd)
    finally:
        os.close(fd)


def _get(client: StubTreq, path: str) -> dict[str, object]:
    responses: list[IResponse] = []
    client.get(f"http://stasis{path}").addCallback(responses.append)
    client.flush()
    bodies: list[bytes] = []
    client.content(responses[0]).addCallback(bodies.append)
    client.flush()
    document: dict[str, object] = json.loads(bodies[0])
    return document


def test_health_names_the_worker_and_stats_report_the_counters_given(tally_fd: int) -> None:
    tally = Tally.map(tally_fd, 3)
    tally.slot(0).hits += 2
    tally.slot(2).misses += 1
    store = MemoryStore(Clock())
    store.open()
    worker = StubTreq(Root(Resource(), store, tally.total(), worker=2))
    health = _get(worker, "/health")
    assert health["worker"] == {"index": 2, "pid": os.getpid()}
    stats = _get(worker, "/stats")
    assert (stats["hits"], stats["misses"], stats["hitRate"]) == (2, 1, 0.6667)
    # Without workers, /health is the original tool's shape, untouched.
    alone = StubTreq(Root(Resource(), store, Counters()))
    assert set(_get(alone, "/health")) == {"status", "cache"}


@pytest.mark.parametrize(("index", "keeps_house"), [(0, True), (1, False)])
def test_only_the_first_worker_prunes_and_evicts(
    tally_fd: int, index: int, keeps_house: bool
) -> None:
    tally = Tally.map(tally_fd, 3)
    reactor = MemoryReactorClock()
    worker = Worker(
        index=index,
        endpoint=TCP4ServerEndpoint(reactor, 0),
        counters=tally.slot(index),
        totals=tally.total(),
    )
    front = build_front(Config(max_entries=10), reactor, MemoryStore(reactor), worker)
    assert (front.engine.housekeeping is not None) == keeps_house
    assert front.counters is worker.counters


def test_a_worker_runs_this_checkout_but_an_installed_stasis_leaves_pythonpath_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    import stasis
    from stasis.workers import supervisor

    root = os.path.dirname(os.path.dirname(os.path.abspath(stasis.__file__)))
    monkeypatch.setattr(supervisor, "_site_folders", lambda: set())
    checkout = supervisor._environment({"PYTHONPATH": "/mine"})
    assert checkout["PYTHONPATH"] == os.pathsep.join([root, "/mine"])
    monkeypatch.setattr(supervisor, "_site_folders", lambda: {root})
    installed = supervisor._environment({"PYTHONPATH": "/mine"})
    assert installed["PYTHONPATH"] == "/mine"  # the user's path still comes first
