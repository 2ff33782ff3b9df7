"""
Replay-miss diagnostics for large requests (issue 15): compared field by field
while parsing them is cheap, by their length beyond, never parsed at any cost.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import stasis.cache.nearest as nearest
from stasis.keys import WHOLE_BODY_BYTES
from tests.test_proxy_resource import CHAT, Harness
from tests.test_scopes_and_replay import _record, error_of

REPLAY = {"X-Stasis-Mode": "replay"}


def test_a_request_keyed_by_the_stream_is_still_compared_field_by_field() -> None:
    harness = Harness()
    messages = [{"role": "user", "content": f"message {i} " + "x" * 100} for i in range(1000)]
    large: dict[str, Any] = {**CHAT, "messages": messages}
    assert len(str(large)) > WHOLE_BODY_BYTES  # keyed without a document to compare
    _record(harness, **large, temperature=0.2)
    _response, body = harness.call(body={**large, "temperature": 0.3}, **REPLAY)
    assert error_of(body)["nearest"]["differences"] == ["temperature: 0.2 → 0.3"]


def test_a_body_too_costly_to_parse_is_compared_by_its_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    harness = Harness()
    _record(harness, input=[1] * 2000)
    monkeypatch.setattr(nearest, "DOCUMENT_BUDGET", 100_000)  # ~200 bytes a value: 400 KB

    def refused(body: bytes) -> Any:
        raise AssertionError("a body over the budget was parsed")

    monkeypatch.setattr(nearest, "parse_json", refused)
    asked = {**CHAT, "input": [1] * 2001}
    _response, body = harness.call(body=asked, **REPLAY)
    recorded = json.dumps({**CHAT, "input": [1] * 2000})
    assert error_of(body)["nearest"]["differences"] == [
        f'(the body): "{len(recorded)} bytes" → "{len(json.dumps(asked))} bytes"'
    ]


def test_the_parse_cost_bounds_what_parsing_holds() -> None:
    assert nearest._parse_cost(b"[" + b"1," * 999 + b"1]") == 200 * 1001 + 8 * 2001
    assert nearest._parse_cost(b'"' + b"x" * 1000 + b'"') == 200 + 8 * 1002
