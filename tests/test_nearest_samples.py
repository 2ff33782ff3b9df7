"""
The replay-miss diagnostics and samples: a caller's own sample is one of its
entries too (its key is its first answer's key, sampled), in memory (see
test_proxy_resource).
"""

from __future__ import annotations

from stasis.cache.samples import sample_key
from tests.test_proxy_resource import CHAT, Harness
from tests.test_scopes_and_replay import KEY_A, KEY_B, error_of, status


def test_the_caller_is_shown_its_own_sample() -> None:
    harness = Harness(policy={"samples": 2})
    recorded = {**CHAT, "temperature": 1}
    assert [status(harness.call(body=recorded, **KEY_A)[0]) for _ in range(2)] == ["MISS"] * 2
    first, second = sorted(harness.store.entries.values(), key=lambda entry: entry.sample)
    assert second.key == sample_key(first.key, 1)
    del harness.store.entries[first.key]  # only the sample is left to be the nearest

    asked = {**CHAT, "temperature": 0.5}
    response, body = harness.call(body=asked, **KEY_A, **{"X-Stasis-Mode": "replay"})
    assert response.code == 504
    assert error_of(body)["nearest"] == {
        "key": second.shared_key,
        "differences": ["temperature: 1 → 0.5"],
    }
    _response, body = harness.call(body=asked, **KEY_B, **{"X-Stasis-Mode": "replay"})
    assert "nearest" not in error_of(body)
