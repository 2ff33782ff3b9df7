"""
Every credential a request carries partitions the cache, whatever provider its
path looks like: one daemon in front of a custom upstream that authenticates
with any of the usual headers (or one named by ``--credential-header``) never
answers one key's caller with another key's entry.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream
from tests.test_proxy_resource import CHAT, Harness, header
from tests.test_scopes_and_replay import status

PATHS = {
    "openai": ("/v1/chat/completions", CHAT),
    "bedrock": (
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
        {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
    ),
    "azure": ("/openai/deployments/gpt/chat/completions?api-version=2024-06-01", CHAT),
    "gemini": (
        "/v1beta/models/gemini-2.0-flash:generateContent",
        {"contents": [{"parts": [{"text": "hi"}]}]},
    ),
}


@pytest.mark.parametrize("provider", sorted(PATHS))
@pytest.mark.parametrize(
    "name",
    ["authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"],
)
def test_two_values_of_any_credential_header_never_share_an_entry(provider: str, name: str) -> None:
    if provider == "openai" and name in ("x-api-key", "x-goog-api-key"):
        pytest.skip("the header makes it an Anthropic or Gemini request, not cached on that path")
    harness = Harness()
    path, body = PATHS[provider]
    # Beside the harness's own Authorization (unless it is the one under test).
    first, _ = harness.call(body=body, path=path, **{name: "secret-value-a"})
    second, _ = harness.call(body=body, path=path, **{name: "secret-value-b"})
    again, _ = harness.call(body=body, path=path, **{name: "secret-value-a"})
    assert (status(first), status(second), status(again)) == ("MISS", "MISS", "HIT")
    assert header(first, "x-stasis-key") != header(second, "x-stasis-key")
    stored = repr(list(harness.store.entries.values()))
    assert "secret-value" not in stored


def test_a_credential_in_the_query_is_fingerprinted_on_any_path() -> None:
    harness = Harness()
    path, body = PATHS["bedrock"]
    first, _ = harness.call(body=body, path=path + "?key=secret-a")
    second, _ = harness.call(body=body, path=path + "?key=secret-b")
    assert (status(first), status(second)) == ("MISS", "MISS")
    assert all(
        "secret" not in (e.request.query if e.request else "")
        for e in harness.store.entries.values()
    )


def test_a_header_named_by_credential_header_partitions_too() -> None:
    plain = Harness()
    plain.call(**{"X-Gateway-Token": "gw-a"})
    assert status(plain.call(**{"X-Gateway-Token": "gw-b"})[0]) == "HIT"
    harness = Harness(policy={"credential_headers": ("x-gateway-token",)})
    first, _ = harness.call(**{"X-Gateway-Token": "gw-a"})
    second, _ = harness.call(**{"X-Gateway-Token": "gw-b"})
    again, _ = harness.call(**{"X-Gateway-Token": "gw-a"})
    assert (status(first), status(second), status(again)) == ("MISS", "MISS", "HIT")
    assert "gw-a" not in json.dumps([repr(e) for e in harness.store.entries.values()])


def test_credential_header_partitions_a_real_daemons_cache(
    start: Callable[..., Daemon], upstream: FakeUpstream, tmp_path: Path
) -> None:
    body = json.dumps(CHAT).encode()

    def call(daemon: Daemon, token: str) -> str:
        headers = {"Content-Type": "application/json", "X-Gateway-Token": token}
        status, answer, _ = daemon.request("POST", "/v1/chat/completions", body, headers)
        assert status == 200
        return answer["x-stasis-status"]

    plain = start()
    assert [call(plain, "gw-a"), call(plain, "gw-b")] == ["MISS", "HIT"]
    daemon = start("--credential-header", "X-Gateway-Token", db=tmp_path / "gateway.db")
    assert [call(daemon, "gw-a"), call(daemon, "gw-b"), call(daemon, "gw-a")] == [
        "MISS",
        "MISS",
        "HIT",
    ]
    with sqlite3.connect(daemon.db) as db:
        stored = b"".join(
            bytes(v or b"")
            for row in db.execute("SELECT * FROM entries")
            for v in row
            if isinstance(v, bytes)
        )
    assert b"gw-a" not in stored and b"gw-b" not in stored
