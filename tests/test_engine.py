"""
The cache engine's own decisions, driven through the in-memory harness: single
flight (followers get the leader's answer or error, never a stampede), where
keys are derived, and reading a body once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import treq
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.web.iweb import IResponse
from twisted.web.server import NOT_DONE_YET, Request

from stasis.cache import CacheRequest, Live, Stored
from stasis.cache import engine as engine_module
from stasis.cache.answers import Answer
from stasis.cache.engine import KEY_INLINE_BYTES
from tests.memory_store import MemoryStore
from tests.test_proxy_resource import AUTH, CHAT, FakeAPI, Harness, header


class HeldAPI(FakeAPI):
    """The fake API, answering only when released: so requests can overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Request] = []

    def render(self, request: Request) -> bytes:
        self.held.append(request)
        return NOT_DONE_YET  # type: ignore[return-value]

    def release(self) -> None:
        held, self.held = self.held, []
        for request in held:
            request.write(FakeAPI.render(self, request))
            request.finish()


def send(harness: Harness, body: Any = CHAT, **headers: str) -> Deferred[IResponse]:
    """Start a request without letting the upstream answer yet."""
    d: Deferred[IResponse] = harness.client.request(
        "POST",
        "http://stasis.test/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={**AUTH, **headers},
    )
    harness.client.flush()
    return d


def finish(harness: Harness, sent: list[Deferred[IResponse]]) -> list[tuple[IResponse, bytes]]:
    harness._settle()
    if isinstance(harness.api, HeldAPI):
        while harness.api.held:
            harness.api.release()
            harness._settle()
    out = []
    for d in sent:
        responses: list[Any] = []
        d.addBoth(responses.append)
        assert responses, "a request was never answered"
        response = responses[0]
        if hasattr(response, "raiseException"):
            response.raiseException()
        bodies: list[bytes] = []
        treq.content(response).addCallback(bodies.append)
        harness._settle()
        out.append((response, bodies[0]))
    return out


@pytest.mark.parametrize("status", [200, 429, 503])
def test_identical_concurrent_misses_make_one_upstream_call(status: int) -> None:
    harness = Harness(api=HeldAPI())
    harness.api.status = status
    sent = [send(harness) for _ in range(5)]
    assert len(harness.api.held) == 1
    answers = finish(harness, sent)
    assert len(harness.api.seen) == 1
    assert {response.code for response, _ in answers} == {status}
    assert {json.loads(body)["n"] for _, body in answers} == {1}
    leader, followers = answers[0], answers[1:]
    assert header(leader[0], "x-stasis-status") == "MISS"
    for response, _ in followers:
        if status == 200:
            assert header(response, "x-stasis-status") == "HIT"
        else:
            # The leader's error answer, not stored, handed on as it was.
            assert header(response, "x-stasis-status") == "MISS"
            assert (
                header(response, "cache-status")
                == f"stasis; fwd=uri-miss; fwd-status={status}; collapsed"
            )
    assert len(harness.store.entries) == (1 if status == 200 else 0)


def test_identical_misses_during_a_lock_are_answered_without_waiting_for_it() -> None:
    """
    The store's writes wait for a lock another process holds: the leader is
    answered at once saying its entry is pending, and so are its followers,
    with its answer, not stored yet; the entry is committed once it is let go.
    """
    harness = Harness(api=HeldAPI())
    harness.store.hold_writes = harness.store.held_up = True
    sent = [send(harness) for _ in range(3)]
    (leader, _), *followers = finish(harness, sent)  # no time passes
    assert len(harness.api.seen) == 1
    assert header(leader, "cache-status") == "stasis; fwd=uri-miss; fwd-status=200; detail=pending"
    for response, body in followers:
        assert header(response, "x-stasis-status") == "MISS"
        assert header(response, "cache-status") == "stasis; fwd=uri-miss; fwd-status=200; collapsed"
        assert json.loads(body)["n"] == 1
    harness.store.release_writes()
    assert len(harness.store.entries) == 1


class Unreachable(HeldAPI):
    """An upstream whose connection drops before it answers."""

    def release(self) -> None:
        held, self.held = self.held, []
        for request in held:
            self.seen.append((request.method, request.uri, {}))
            request.channel.transport.loseConnection()  # type: ignore[union-attr]


def test_a_leader_that_cannot_reach_the_upstream_hands_its_error_on() -> None:
    harness = Harness(api=Unreachable())
    sent = [send(harness) for _ in range(5)]
    answers = finish(harness, sent)
    assert len(harness.api.seen) == 1
    assert {response.code for response, _ in answers} == {502}
    assert {json.loads(body)["error"]["type"] for _, body in answers} == {
        "stasis_upstream_unreachable"
    }
    assert header(answers[1][0], "cache-status") == "stasis; fwd=uri-miss; collapsed"


class FakeClient:
    """A client of the engine's own (no twisted.web): collects what is relayed."""

    def __init__(self) -> None:
        self.data = b""
        self.gone = False
        self.ended: str | None = None
        self.length: int | None = None

    @property
    def open(self) -> bool:
        return self.ended is None and not self.gone

    def on_gone(self, callback: Any) -> Any:
        return lambda: None

    def write(self, data: bytes) -> None:
        self.data += data

    def set_length(self, length: int) -> None:
        self.length = length

    def attach(self, producer: Any) -> None:
        pass

    def detach(self) -> None:
        pass

    def finish(self) -> None:
        self.ended = "finished"

    def abort(self) -> None:
        self.ended = "aborted"

    def revise(self, outcome: Any) -> None:
        self.revised = outcome

    def fail(self, error: Any) -> None:
        self.ended = "failed" if not self.data else "aborted"


def answer_of(harness: Harness, d: Deferred[Answer]) -> tuple[Answer, bytes]:
    answers: list[Any] = []
    d.addBoth(answers.append)
    assert answers, "no answer"
    answer = answers[0]
    if isinstance(answer, Stored):
        return answer, answer.entry.body
    assert isinstance(answer, Live), answer
    client = FakeClient()
    answer.relay(client)
    harness._settle()
    assert client.ended == "finished"
    return answer, client.data


def test_a_leader_whose_client_left_is_replaced_by_one_follower() -> None:
    harness = Harness(api=HeldAPI())
    request = CacheRequest(
        method=b"POST",
        target=b"/v1/chat/completions",
        headers=[(b"Authorization", b"Bearer sk-test"), (b"Content-Type", b"application/json")],
        body=json.dumps(CHAT).encode(),
    )
    leader, *followers = [harness.engine.serve(request) for _ in range(5)]
    harness._settle()
    assert len(harness.api.held) == 1
    # The leader's client disconnects before the upstream answers (the web
    # adapter cancels its answer): its upstream call stops, and one follower
    # fetches in its place while the three others wait for it.
    leader.addErrback(lambda failure: failure.trap(CancelledError))
    leader.cancel()
    harness._settle()
    assert len(harness.api.held) == 2
    harness.api.held.pop(0)  # the abandoned call
    harness.api.release()
    harness._settle()
    answers = [answer_of(harness, d) for d in followers]
    statuses = [answer.outcome.status.value for answer, _ in answers]
    assert statuses == [b"MISS", b"HIT", b"HIT", b"HIT"]
    assert {json.loads(body)["n"] for _, body in answers} == {1}
    assert len(harness.store.entries) == 1


def test_large_bodies_are_keyed_off_the_reactor_thread() -> None:
    harness = Harness()
    threaded: list[object] = []

    def in_thread(work: Any) -> Any:
        threaded.append(work)
        return maybeDeferred(work)

    harness.engine.in_thread = in_thread
    small = {**CHAT, "pad": "x" * 100}
    large = {**CHAT, "input": [0.123456] * (KEY_INLINE_BYTES // 4)}
    assert len(json.dumps(small)) <= KEY_INLINE_BYTES < len(json.dumps(large))
    assert header(harness.call(body=small)[0], "x-stasis-status") == "MISS"
    assert threaded == []
    for expected in ("MISS", "HIT"):
        assert header(harness.call(body=large)[0], "x-stasis-status") == expected
    assert len(threaded) == 1  # the repeat is recognised by its bytes, unparsed


def test_a_miss_parses_its_body_once(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    body = json.dumps({**CHAT, "marker": "parse me once"}).encode()
    parsed: list[bytes] = []
    real_loads = json.loads

    def counting_loads(text: Any, **kwargs: Any) -> Any:
        if text == body:
            parsed.append(text)
        return real_loads(text, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    response, _ = harness.call(body=body)
    assert header(response, "x-stasis-status") == "MISS"
    (entry,) = harness.store.entries.values()
    assert entry.model == "gpt-4o-mini"
    assert len(parsed) == 1


def test_engine_modules_know_nothing_of_twisted_web() -> None:
    import subprocess
    import sys

    script = (
        "import sys, stasis.cache.engine; "
        "print([m for m in sys.modules if m.startswith(('twisted.web', 'treq'))])"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_engine_module_reads_its_thresholds_from_one_place() -> None:
    assert engine_module.KEY_INLINE_BYTES == KEY_INLINE_BYTES


class SlowReads(MemoryStore):
    """A store whose reads answer only when released, with what they read when asked."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.hold_reads = False
        self.held_reads: list[tuple[Deferred[Any], Any]] = []

    def get(self, key: str, *, request: bool = False) -> Deferred[Any]:
        read = super().get(key, request=request)
        if not self.hold_reads:
            return read
        answered: list[Any] = []
        read.addCallback(answered.append)
        later: Deferred[Any] = Deferred()
        self.held_reads.append((later, answered[0]))
        return later

    def release_reads(self) -> None:
        held, self.held_reads = self.held_reads, []
        for later, entry in held:
            later.callback(entry)


def test_a_read_that_began_before_a_fetch_landed_does_not_fetch_again() -> None:
    # A read of the store that started while another request's entry was
    # being committed finds nothing; if the flight is looked for only after
    # the read, it has landed by then and the same answer is fetched twice.
    clock = Clock()
    harness = Harness(clock=clock, memory=0, shared_store=SlowReads(clock))
    store = harness.store
    assert isinstance(store, SlowReads)
    store.hold_writes = True
    first = send(harness)  # answered by the upstream; its put is held
    harness._settle()
    assert len(harness.api.seen) == 1 and len(store._held) == 1
    store.hold_reads = True
    second = send(harness)
    store.release_writes()  # committed: the first request's flight lands
    harness._settle()
    store.hold_reads = False
    store.release_reads()  # what the second read found: nothing, if it read
    answers = finish(harness, [first, second])
    assert len(harness.api.seen) == 1
    assert [header(response, "x-stasis-status") for response, _ in answers] == ["MISS", "HIT"]
    assert answers[0][1] == answers[1][1]


def test_followers_of_a_lookup_that_found_the_entry_are_plain_hits() -> None:
    clock = Clock()
    harness = Harness(clock=clock, memory=0, shared_store=SlowReads(clock))
    store = harness.store
    assert isinstance(store, SlowReads)
    harness.call()  # stored
    store.hold_reads = True
    sent = [send(harness) for _ in range(3)]
    assert len(store.held_reads) == 1  # one read for the three
    store.hold_reads = False
    store.release_reads()
    answers = finish(harness, sent)
    assert len(harness.api.seen) == 1
    assert [header(response, "cache-status") for response, _ in answers] == ["stasis; hit"] * 3
