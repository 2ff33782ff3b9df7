"""
The admin API's resources without a daemon: how a store that fails and an
entry without its request are answered.
"""

from __future__ import annotations

import json
from typing import Any

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
