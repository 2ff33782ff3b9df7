"""
Cassettes and the cache policy: a request's ignore rules (``request.ignored``)
and an entry's sample number (``sample``) are exported and imported, and left
out when empty, so a cassette written before they existed stays byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor

from stasis.cassettes import entry_document, entry_from_document, export_cassette, import_cassette
from stasis.model import Entry
from stasis.store import Store, open_store
from tests.memory_store import MemoryStore
from tests.store_support import key, make_entry
from tests.test_cassette_documents import entries, refusal, through_json
from tests.test_cassettes import files, recorded

RULES = ("metadata.user_id", "messages[*].id", '["x.y"]')


def ruled(n: int, sample: int = 0, ignored: tuple[str, ...] = RULES) -> Entry:
    entry = recorded(n, sample=sample)
    assert entry.request is not None
    return evolve(entry, request=evolve(entry.request, ignored=ignored))


def test_the_rules_sit_in_the_request_and_the_sample_beside_the_key() -> None:
    document = entry_document(ruled(1, sample=2))
    assert list(document)[:3] == ["stasis", "key", "sample"]
    assert document["sample"] == 2
    assert list(document["request"])[:4] == ["query", "headers", "ignored", "body"]
    assert document["request"]["ignored"] == list(RULES)
    back = through_json(ruled(1, sample=2))
    assert back.sample == 2
    assert back.request is not None and back.request.ignored == RULES


def test_without_them_a_document_is_as_it_was() -> None:
    document = entry_document(ruled(1, sample=0, ignored=()))
    assert "sample" not in document
    assert "ignored" not in document["request"]
    assert document == entry_document(recorded(1))


rules = st.lists(st.sampled_from([*RULES, "user", "a[0]", '["*"]', "b.*"]), unique=True, max_size=4)


@given(entries(), st.integers(0, 99), rules)
def test_export_import_export_is_a_fixed_point_with_them(
    entry: Entry, sample: int, ignored: list[str]
) -> None:
    request = None if entry.request is None else evolve(entry.request, ignored=tuple(ignored))
    entry = evolve(entry, sample=sample, request=request)
    back = through_json(entry)
    assert back.sample == sample
    assert (back.request and back.request.ignored) == (request and tuple(ignored))
    assert entry_document(back) == entry_document(entry)


def test_a_rule_written_by_hand_is_read_as_the_engine_writes_it() -> None:
    document = entry_document(ruled(1))
    document["request"]["ignored"] = ["  user ", 'metadata["user_id"]']
    back = entry_from_document(document, "test:1")
    assert back.request is not None and back.request.ignored == ("user", 'metadata["user_id"]')


def _with(change: dict[str, Any], request: dict[str, Any] | None = None) -> dict[str, Any]:
    document = {**entry_document(ruled(1)), **change}
    if request is not None:
        document["request"] = {**document["request"], **request}
    return document


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (_with({}, {"ignored": "user"}), "request.ignored: expected an array, got a string"),
        (_with({}, {"ignored": [3]}), "request.ignored[0]: expected a JSON path as a string"),
        (
            _with({}, {"ignored": ["user", "a..b"]}),
            "request.ignored[1]: 'a..b': expected a member name at position 2",
        ),
        (_with({"sample": -1}), "sample: expected an integer from 0 to 99, got -1"),
        (_with({"sample": 100}), "sample: expected an integer from 0 to 99, got 100"),
        (_with({"sample": "1"}), "sample: expected an integer, got a string"),
    ],
)
def test_bad_rules_or_samples_are_refused_naming_them(
    document: dict[str, Any], expected: str
) -> None:
    assert refusal(document) == f"cassette/x.json:4: {expected}"


# Through a store, to files and back


async def _round_trip(first: Store, second: Store, tmp_path: Path) -> list[tuple[int, Any]]:
    """Export, import, export; each imported entry's sample and rules, in the order written."""
    entries = [ruled(1, sample=1), ruled(2), recorded(3)]
    await first.put_all(entries)
    await export_cassette(first, str(tmp_path / "first"))
    await import_cassette(second, str(tmp_path / "first"))
    await export_cassette(second, str(tmp_path / "second"))
    assert files(tmp_path / "first") == files(tmp_path / "second")
    written = json.loads((tmp_path / "first" / f"{key('shared-1')}.json").read_text())
    assert (written["sample"], written["request"]["ignored"]) == (1, list(RULES))
    plain = json.loads((tmp_path / "first" / f"{key('shared-3')}.json").read_text())
    assert "sample" not in plain and "ignored" not in plain["request"]
    imported = {e.key: e for e in await second.get_many([e.shared_key for e in entries])}
    return [
        (found.sample, found.request and found.request.ignored)
        for found in (imported[entry.shared_key] for entry in entries)
    ]


@pytest_twisted.ensureDeferred
async def test_a_memory_store_round_trip_keeps_them(tmp_path: Path) -> None:
    first, second = MemoryStore(reactor), MemoryStore(reactor)
    first.open()
    second.open()
    assert await _round_trip(first, second, tmp_path) == [
        (1, RULES),
        (0, RULES),
        (0, ()),
    ]


@pytest_twisted.ensureDeferred
async def test_an_sqlite_store_round_trip_keeps_them(tmp_path: Path) -> None:
    """Depends on the SQLite store keeping ``StoredRequest.ignored`` and ``Entry.sample``."""
    first = open_store(str(tmp_path / "first.db"), reactor)
    second = open_store(str(tmp_path / "second.db"), reactor)
    first.open()
    second.open()
    try:
        assert await _round_trip(first, second, tmp_path) == [
            (1, RULES),
            (0, RULES),
            (0, ()),
        ]
    finally:
        await first.close()
        await second.close()


def test_an_entry_of_an_older_stasis_still_has_no_request() -> None:
    document = entry_document(make_entry(4, sample=3))
    assert document["request"] is None
    assert entry_from_document(document, "test:1").sample == 3
