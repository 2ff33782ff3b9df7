"""
End to end: ignore rules on a real ``twistd -n stasis``, with the official openai SDK
sending a ``user`` and ``metadata`` that change on every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream
from tests.test_manage import stasis

KEY = "sk-test-ignore-0123456789"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def run(daemon: Daemon, number: int, headers: dict[str, str] | None = None, **fields: Any) -> Any:
    """One test run's call: its own ``user`` and ``metadata.user_id``."""
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key=KEY, max_retries=0)
    params: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "user": f"ci-run-{number}",
        "metadata": {"user_id": f"u-{number}", "suite": "geography"},
        **fields,
    }
    return client.chat.completions.with_raw_response.create(**params, extra_headers=headers)


def test_ignore_on_the_daemon_makes_each_runs_call_a_hit(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--ignore", "user", "--ignore", "metadata.user_id")
    first, second = run(daemon, 1), run(daemon, 2)
    assert (first.headers["x-stasis-status"], second.headers["x-stasis-status"]) == ("MISS", "HIT")
    assert first.headers["x-stasis-key"] == second.headers["x-stasis-key"]
    assert second.content == first.content
    # The upstream saw the fields: only the key leaves them out.
    (seen,) = upstream.calls("/v1/chat/completions")
    assert (seen.json()["user"], seen.json()["metadata"]["user_id"]) == ("ci-run-1", "u-1")
    # A field no rule names still counts.
    other = run(daemon, 3, metadata={"user_id": "u-3", "suite": "history"})
    assert other.headers["x-stasis-status"] == "MISS"


def test_x_stasis_ignore_does_the_same_per_request(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start()
    rules = {"X-Stasis-Ignore": "user, metadata.user_id"}
    first, second = run(daemon, 1, rules), run(daemon, 2, rules)
    assert (first.headers["x-stasis-status"], second.headers["x-stasis-status"]) == ("MISS", "HIT")
    assert run(daemon, 3).headers["x-stasis-status"] == "MISS"
    assert all("x-stasis-ignore" not in call.headers for call in upstream.calls())


def test_the_rules_are_kept_for_show_and_the_replay_miss_diagnostics(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--ignore", "user")
    key = run(daemon, 1, {"X-Stasis-Ignore": "metadata.user_id"}).headers["x-stasis-key"]
    shown = stasis("show", key, db=daemon.db, cwd=daemon.db.parent)
    assert shown.returncode == 0, shown.stderr
    assert "(left out of its key: user, metadata.user_id)\n" in shown.stdout
    as_json = json.loads(stasis("show", "--json", key, db=daemon.db, cwd=daemon.db.parent).stdout)
    assert as_json["request"]["ignored"] == ["user", "metadata.user_id"]

    # Replayed by another run at another temperature: only the temperature is named.
    with pytest.raises(openai.APIStatusError) as missed:
        run(
            daemon,
            2,
            {"X-Stasis-Ignore": "metadata.user_id", "X-Stasis-Mode": "replay"},
            temperature=0.5,
        )
    assert missed.value.status_code == 504
    error = missed.value.response.json()["error"]
    assert error["nearest"]["differences"] == ["temperature: (absent) → 0.5"]
