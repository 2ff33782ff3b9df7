"""
``Cache-Status: …; stored`` is said only of an answer that is committed: its
head waits for the commit (the body is held back until then), and says
``detail=not-stored`` when the store refused it.
"""

from __future__ import annotations

from typing import Any

from stasis.cache.engine import COMMIT_PATIENCE
from tests.test_proxy_resource import Harness, header


def test_a_committed_answer_says_stored() -> None:
    harness = Harness()
    response, _ = harness.call()
    assert header(response, "cache-status") == "stasis; fwd=uri-miss; fwd-status=200; stored"
    assert len(harness.store.entries) == 1


def test_an_answer_the_store_refused_says_so_and_is_still_answered() -> None:
    harness = Harness()
    harness.store.fail_writes = True
    response, body = harness.call()
    assert response.code == 200 and body
    assert header(response, "x-stasis-status") == "MISS"
    assert (
        header(response, "cache-status")
        == "stasis; fwd=uri-miss; fwd-status=200; detail=not-stored"
    )
    assert harness.store.entries == {}


def test_a_commit_held_back_past_patience_does_not_claim_stored() -> None:
    harness = Harness()
    harness.store.hold_writes = True
    d = harness.client.request(
        "POST",
        "http://stasis.test/v1/chat/completions",
        data=b'{"model": "m", "messages": []}',
        headers={"Authorization": "Bearer sk-test"},
    )
    harness._settle()
    harness.clock.advance(COMMIT_PATIENCE + 0.1)
    harness._settle()
    responses: list[Any] = []
    d.addBoth(responses.append)
    assert responses, "the answer waited for the commit past its patience"
    assert (
        header(responses[0], "cache-status")
        == "stasis; fwd=uri-miss; fwd-status=200; detail=pending"
    )
    harness.store.release_writes()
    assert len(harness.store.entries) == 1


def test_a_commit_held_up_by_a_lock_is_not_waited_for() -> None:
    """The store knows its writes wait for a lock: the answer goes at once, saying so."""
    harness = Harness()
    harness.store.hold_writes = True
    harness.store.held_up = True
    response, body = harness.call()  # no time passes
    assert response.code == 200 and body
    assert (
        header(response, "cache-status") == "stasis; fwd=uri-miss; fwd-status=200; detail=pending"
    )
    assert harness.store.entries == {}
    harness.store.release_writes()
    assert len(harness.store.entries) == 1
