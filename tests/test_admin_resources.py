"""
The admin API's resources without a daemon: how a store that fails and an
entry without its request are answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from stasis.cache import Counters
from stasis.model import Entry
from stasis.web.admin.api import AdminApi
from stasis.web.traffic import Traffic
from tests.memory_store import MemoryStore


def _api(store: MemoryStore) -> AdminApi:
    return AdminApi(store, Counters(), Traffic(Clock()))  # type: ignore[arg-type]


def _render(api: AdminApi, method: bytes, *path: bytes, **args: bytes) -> tuple[int, Any]:
    request = DummyRequest(list(path))
    request.method = method
    request.args = {name.encode(): [value] for name, value in args.items()}
    api.render(request)
    assert request.finished
    return request.responseCode or 200, json.loads(b"".join(request.written))


def test_a_store_that_fails_is_a_503_not_a_traceback() -> None:
    store = MemoryStore(Clock(), fail_reads=True, fail_writes=True)
    for method, path in [
        (b"GET", (b"stats",)),
        (b"GET", (b"entries",)),
        (b"GET", (b"entries", b"a" * 64)),
        (b"DELETE", (b"entries", b"a" * 64)),
    ]:
        status, body = _render(_api(store), method, *path)
        assert (status, body["error"]["type"]) == (503, "stasis_store_unavailable"), path
        assert "disk I/O error" in body["error"]["message"] or "full" in body["error"]["message"]


def test_an_entry_whose_request_is_not_kept_has_no_conversation() -> None:
    store = MemoryStore(Clock())
    key = "b" * 64
    store.entries[key] = Entry(key=key, status=200, headers=(), body=b"\xff\xfe", created_at=1.0)
    status, body = _render(_api(store), b"GET", b"entries", key.encode())
    assert status == 200
    assert (body["request"], body["conversation"], body["answer"]) == (None, [], None)
    assert body["response"]["bodyEncoding"] == "base64"


def test_a_bad_number_is_a_400() -> None:
    api = _api(MemoryStore(Clock()))
    for value in ("0", "501", "-1", "1.5", "²", "", "x" * 10):
        status, body = _render(api, b"GET", b"entries", limit=value.encode())
        assert (status, body["error"]["type"]) == (400, "stasis_bad_request"), value
    status, body = _render(api, b"GET", b"recent", after=b"\xff")
    assert status == 400


def test_a_large_entry_is_read_for_its_view_on_a_thread_and_a_small_one_at_once() -> None:
    store = MemoryStore(Clock())
    text = "word " * 200_000  # 1 MB of answer
    answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
    small, large = "c" * 64, "d" * 64
    for key, body in ((small, b'{"choices": []}'), (large, answer.encode())):
        store.entries[key] = Entry(key=key, status=200, headers=(), body=body, created_at=1.0)
    ran: list[str] = []

    def in_thread(work: Callable[[], bytes]) -> Deferred[bytes]:
        ran.append("thread")
        return succeed(work())

    api = AdminApi(store, Counters(), Traffic(Clock()), in_thread=in_thread)  # type: ignore[arg-type]
    status, body = _render(api, b"GET", b"entries", small.encode())
    assert (status, ran) == (200, [])
    status, body = _render(api, b"GET", b"entries", large.encode())
    assert (status, ran) == (200, ["thread"])
    assert body["answer"] == text
    assert body["key"] == large
