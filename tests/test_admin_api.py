"""
The admin API under ``/_stasis/api/`` over plain HTTP against a real daemon
(docs/admin-api.md): the listing and its paging and filters, one entry, a
delete and a purge (the database agrees), the figures, and the recent
requests and series moving with traffic; and no credential in any answer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from tests.admin_client import KEY, Answer, call, chat
from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream

JSON = {"Content-Type": "application/json"}


def stored_keys(daemon: Daemon) -> set[str]:
    with sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True) as db:
        return {bytes(row[0]).hex() for row in db.execute("SELECT key FROM entries")}


def api(daemon: Daemon, path: str) -> Answer:
    answer = call(daemon, "GET", "/_stasis/api/" + path)
    assert answer.status == 200, answer.body
    return answer


def entry_prompt(entry: Answer) -> str:
    return str(entry.json["request"]["body"]["messages"][0]["content"])


def assert_no_credential(*answers: Answer) -> None:
    pieces = {KEY[i : i + 8] for i in range(len(KEY) - 7)}
    for answer in answers:
        text = answer.body.decode()
        assert not [piece for piece in pieces if piece in text], text


def test_listing_pages_filters_gets_deletes_and_purges(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start()
    for n in range(3):
        assert chat(daemon, f"small {n}").status == 200
    for n in range(2):
        assert chat(daemon, f"large {n}", model="gpt-4o", namespace="team-a").status == 200
    seen: list[Answer] = []

    # Every entry once, over pages of two, newest first.
    keys: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = api(daemon, "entries?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen.append(page)
        keys += [entry["key"] for entry in page.json["entries"]]
        pages += 1
        cursor = page.json["cursor"]
        if cursor is None:
            break
    assert (pages, len(keys)) == (3, 5)
    assert set(keys) == stored_keys(daemon)
    first = page.json["entries"][0]
    assert {"key", "storedAt", "model", "namespace", "totalTokens", "hits", "sizeBytes"} <= set(
        first
    )

    by_model = api(daemon, "entries?model=gpt-4o")
    assert {e["model"] for e in by_model.json["entries"]} == {"gpt-4o"}
    assert len(by_model.json["entries"]) == 2
    in_default = api(daemon, "entries?namespace=")
    assert len(in_default.json["entries"]) == 3
    # A search in the prompts and answers, whatever the case.
    found = api(daemon, "entries?q=LARGE%201")
    assert len(found.json["entries"]) == 1
    assert found.json["entries"][0]["model"] == "gpt-4o"
    assert len(api(daemon, "entries?q=large&model=gpt-4o-mini").json["entries"]) == 0
    assert len(api(daemon, "entries?q=").json["entries"]) == 5
    assert call(daemon, "GET", "/_stasis/api/entries?limit=0").status == 400
    assert call(daemon, "GET", "/_stasis/api/entries?limit=501").status == 400
    bad_cursor = call(daemon, "GET", "/_stasis/api/entries?cursor=not-one")
    assert (bad_cursor.status, bad_cursor.json["error"]["type"]) == (400, "stasis_bad_request")

    # One entry: what `stasis show --json` says.
    key = by_model.json["entries"][0]["key"]
    entry = api(daemon, f"entries/{key}")
    seen.append(entry)
    assert entry.json["key"] == key
    assert entry.json["request"]["body"]["model"] == "gpt-4o"
    assert entry.json["response"]["status"] == 200
    assert entry.json["conversation"] == [{"role": "user", "text": entry_prompt(entry)}]
    assert entry.json["conversation"][0]["text"].startswith("large ")
    assert isinstance(entry.json["answer"], str)
    assert entry.headers["content-type"] == "application/json; charset=utf-8"
    assert entry.headers["cache-control"] == "no-store"
    assert entry.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in entry.headers["content-security-policy"]
    assert call(daemon, "GET", "/_stasis/api/entries/" + "0" * 64).status == 404
    assert call(daemon, "GET", "/_stasis/api/entries/nothex").status == 404

    # A delete: gone from the database, and a second one finds nothing.
    deleted = call(daemon, "DELETE", f"/_stasis/api/entries/{key}")
    assert (deleted.status, deleted.json) == (200, {"deleted": True})
    assert key not in stored_keys(daemon)
    assert call(daemon, "GET", f"/_stasis/api/entries/{key}").status == 404
    assert call(daemon, "DELETE", f"/_stasis/api/entries/{key}").status == 404

    # Tokens saved, by model and by namespace, once an entry was hit.
    assert chat(daemon, "small 0").headers["x-stasis-status"] == "HIT"
    # Hits reach the database in batches, within about a second.
    poll_until(lambda: api(daemon, "stats").json["tokensSavedByModel"][0]["tokensSaved"] > 0)
    stats = api(daemon, "stats").json
    saved = stats["tokensSavedByModel"][0]
    assert (saved["model"], saved["entries"]) == ("gpt-4o-mini", 3)
    assert [s["tokensSaved"] for s in stats["tokensSavedByModel"][1:]] == [0]
    assert stats["tokensSavedByNamespace"][0]["namespace"] == ""
    assert stats["tokensSavedByNamespace"][0]["tokensSaved"] == saved["tokensSaved"]

    # A purge by a filter; an empty one must say it means everything.
    purge = "/_stasis/api/purge"
    by_text = call(daemon, "POST", purge, json.dumps({"q": "small 2"}).encode(), JSON)
    assert (by_text.status, by_text.json) == (200, {"purged": 1})
    by_filter = call(daemon, "POST", purge, json.dumps({"namespace": "team-a"}).encode(), JSON)
    assert (by_filter.status, by_filter.json) == (200, {"purged": 1})
    assert len(stored_keys(daemon)) == 2
    for body in (b"{}", b'{"everything": false}', b"[]", b"not json", b'{"modle": "x"}'):
        refused = call(daemon, "POST", purge, body, JSON)
        assert refused.status == 400, body
    assert len(stored_keys(daemon)) == 2
    everything = call(daemon, "POST", purge, b'{"everything": true}', JSON)
    assert (everything.status, everything.json) == (200, {"purged": 2})
    assert stored_keys(daemon) == set()

    stats = api(daemon, "stats")
    seen.append(stats)
    assert stats.json["totalEntries"] == 0
    assert stats.json["misses"] == 5
    assert_no_credential(*seen)


def test_recent_and_series_move_with_traffic_and_show_a_replay_miss(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start()
    before = api(daemon, "recent").json
    assert before == {"last": 0, "requests": []}
    assert chat(daemon, "hello").status == 200
    assert chat(daemon, "hello").headers["x-stasis-status"] == "HIT"
    missed = chat(daemon, "never recorded", mode="replay")
    assert missed.status == 504

    recent = api(daemon, "recent")
    requests = recent.json["requests"]
    assert recent.json["last"] == 3
    assert [r["seq"] for r in requests] == [1, 2, 3]
    assert [r["cache"] for r in requests] == ["MISS", "HIT", "MISS"]
    assert requests[0]["key"] == requests[1]["key"]
    assert requests[0]["path"] == "/v1/chat/completions"
    assert (requests[0]["provider"], requests[0]["model"]) == ("openai", "gpt-4o-mini")
    replay = requests[2]
    assert (replay["status"], replay["detail"]) == (504, "replay-miss")
    assert replay["error"]["type"] == "stasis_replay_miss"
    # Its diagnostics, as the client read them.
    assert replay["error"] == missed.json["error"]
    # Only what came after a number.
    assert [r["seq"] for r in api(daemon, "recent?after=2").json["requests"]] == [3]
    # The admin API's own requests are not among them.
    assert api(daemon, "recent?after=3").json == {"last": 3, "requests": []}

    series = api(daemon, "series?minutes=5").json
    assert series["step"] == 60
    points = series["points"]
    assert 1 <= len(points) <= 5
    assert sum(p["hits"] for p in points) == 1
    assert sum(p["misses"] for p in points) == 2
    assert points[-1]["at"].endswith("Z")
    assert call(daemon, "GET", "/_stasis/api/series?minutes=0").status == 400
    assert_no_credential(recent)


def test_stasis_paths_are_never_proxied_whatever_the_method(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    for method, path in [
        ("GET", "/_stasis/api/nothing"),
        ("POST", "/_stasis/api/nothing"),
        ("PUT", "/_stasis/api/stats"),
        ("POST", "/_stasis/api/stats"),
        ("PATCH", "/_stasis/"),
        ("GET", "/_stasis/api/"),
    ]:
        answer = call(daemon, method, path, b"{}", JSON)
        assert answer.status in (403, 404, 405), (method, path, answer.status)
        assert answer.json["error"]["type"].startswith("stasis_")
    assert call(daemon, "PUT", "/_stasis/api/stats").headers["allow"] == "GET, HEAD"
    assert upstream.calls() == []
    # A path that merely starts alike is the upstream's.
    call(daemon, "POST", "/_stasisfoo", b"{}", JSON)
    assert [c.path for c in upstream.calls()] == ["/_stasisfoo"]


def test_workers_serve_the_api_and_a_delete_reaches_the_shared_store(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--workers", "2")
    for n in range(4):
        assert chat(daemon, f"w {n}").status == 200
    keys = [e["key"] for e in api(daemon, "entries").json["entries"]]
    assert len(keys) == 4
    for key in keys[:2]:
        assert call(daemon, "DELETE", f"/_stasis/api/entries/{key}").status == 200
    assert stored_keys(daemon) == set(keys[2:])
    # Whichever worker answers, the listing agrees.
    for _ in range(4):
        assert {e["key"] for e in api(daemon, "entries").json["entries"]} == set(keys[2:])
    assert daemon.log.count("admin token:") == 1
