"""
The engine's in-memory layers, alone: bounded, and never serving what the store
no longer holds, because each follows the store's change feed per key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from stasis.cache.memory import HotEntries, KeyFilter, RequestKeys
from stasis.cache.memory.bloom import MAX_BITS, MIN_BITS, KeyBloom
from stasis.model import Change, ChangeKind, Entry, StoredRequest
from tests.memory_store import MemoryStore

digests = st.binary(min_size=32, max_size=32)


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def entry(n: int, size: int = 100) -> Entry:
    return Entry(
        key=f"{n:064x}",
        status=200,
        headers=((b"content-type", b"application/json"),),
        body=b"x" * size,
        created_at=float(n),
    )


# Hot entries


def test_the_budget_evicts_the_least_recently_used() -> None:
    hot = HotEntries(budget=4 * (1000 + 512 + 28))
    for n in range(4):
        hot.remember(entry(n, 1000))
    hot.get(entry(0).key)  # 0 is now the most recently used
    hot.remember(entry(4, 1000))
    assert hot.used <= hot.budget
    assert {n for n in range(5) if hot.get(entry(n).key) is not None} == {0, 2, 3, 4}


def test_an_entry_over_a_quarter_of_the_budget_is_not_kept() -> None:
    hot = HotEntries(budget=4000)
    hot.remember(entry(1, 2000))
    assert (hot.used, len(hot)) == (0, 0)
    assert len(HotEntries(budget=0)) == 0


def test_a_put_is_remembered_once_committed_and_not_if_it_failed() -> None:
    hot = HotEntries(budget=1 << 20)
    one, two = entry(1), entry(2)
    hot.putting(one)
    assert hot.get(one.key) is None  # not in the store yet
    hot.committed(one, stored=True)
    assert hot.get(one.key) is one
    hot.putting(two)
    hot.committed(two, stored=False)
    assert hot.get(two.key) is None


def test_an_entry_just_stored_is_kept_without_its_request() -> None:
    # The request may be tens of MB (issue 15) that the budget does not weigh.
    hot = HotEntries(budget=1 << 20)
    stored = evolve(entry(1), request=StoredRequest(body=b"[1," * 1_000_000 + b"1]"))
    hot.putting(stored)
    hot.committed(stored, stored=True)
    kept = hot.get(stored.key)
    assert kept is not None and kept.request is None
    assert (kept.body, kept.headers) == (stored.body, stored.headers)
    assert hot.used < 1000


def test_a_delete_or_purge_during_a_commit_is_not_undone_in_memory() -> None:
    hot = HotEntries(budget=1 << 20)
    one, two = entry(1), entry(2)
    hot.putting(one)
    hot.putting(two)
    hot.on_change(Change(ChangeKind.DELETE, (one.key,)))
    hot.on_change(Change(ChangeKind.PURGE, (two.key,), local=False))
    hot.committed(one, stored=True)
    hot.committed(two, stored=True)
    assert (hot.get(one.key), hot.get(two.key), hot.used) == (None, None, 0)


def test_of_two_puts_of_one_key_in_flight_the_later_is_kept() -> None:
    hot = HotEntries(budget=1 << 20)
    older, newer = entry(1), evolve(entry(1), body=b"newer")
    hot.putting(older)
    hot.putting(newer)
    hot.committed(older, stored=True)
    assert hot.get(older.key) is None
    hot.committed(newer, stored=True)
    assert hot.get(older.key) is newer


def test_changes_forget_exactly_their_keys() -> None:
    hot = HotEntries(budget=1 << 20)
    for n in range(4):
        hot.remember(entry(n))
    # This process's own put was remembered by committed(): nothing to forget.
    hot.on_change(Change(ChangeKind.PUT, (entry(0).key,)))
    # Another process replaced entry 1, deleted 2: both forgotten, nothing else.
    hot.on_change(Change(ChangeKind.PUT, (entry(1).key,), local=False))
    hot.on_change(Change(ChangeKind.DELETE, (entry(2).key,), local=False))
    assert {n for n in range(4) if hot.get(entry(n).key)} == {0, 3}
    hot.on_change(Change(ChangeKind.RESET, local=False))
    assert (len(hot), hot.used) == (0, 0)


# The key filter


def run(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred did not fire"
    return results[0]


def test_the_key_filter_is_read_after_the_first_lookup_that_found_nothing() -> None:
    store = MemoryStore(Clock())
    for n in range(50):
        store.entries[key(n)] = evolve(entry(n), key=key(n))
    keys = KeyFilter(store)
    assert not keys.ready and not keys.absent(key("never stored"))
    keys.found_nothing()
    assert keys.ready
    assert keys.absent(key("never stored"))
    assert not any(keys.absent(key(n)) for n in range(50))
    keys.add(key("put now"))
    assert not keys.absent(key("put now"))


def test_on_a_store_others_write_all_the_time_nothing_is_called_absent() -> None:
    store = MemoryStore(Clock(), shared=True)
    keys = KeyFilter(store)
    for _ in range(3):
        keys.found_nothing()
    # Another worker may have stored it a moment ago: only the database knows.
    assert not keys.ready and not keys.absent(key("never stored"))


class SlowScan(MemoryStore):
    """Reads its keys only when told to."""

    def scan_keys(self, visit: Callable[[bytes], None]) -> Deferred[None]:
        self.scanning: Deferred[None] = Deferred()
        return self.scanning.addCallback(lambda _: super(SlowScan, self).scan_keys(visit))


def test_puts_while_the_keys_are_read_are_known_after() -> None:
    store = SlowScan(Clock())
    store.entries[key("stored before")] = evolve(entry(1), key=key("stored before"))
    keys = KeyFilter(store)
    keys.found_nothing()
    keys.add(key("mine, being stored"))
    keys.on_change(Change(ChangeKind.PUT, (key("theirs"),), local=False))
    assert not keys.ready
    store.scanning.callback(None)
    assert keys.ready
    assert not keys.absent(key("stored before"))
    assert not keys.absent(key("mine, being stored"))
    assert not keys.absent(key("theirs"))


def test_a_reset_drops_the_filter_until_the_next_miss() -> None:
    store = MemoryStore(Clock())
    keys = KeyFilter(store)
    keys.found_nothing()
    assert keys.absent(key(1))
    keys.on_change(Change(ChangeKind.RESET, local=False))
    # Puts the feed lost may be missing: nothing is called absent until re-read.
    assert not keys.ready and not keys.absent(key(1))
    store.entries[key(1)] = evolve(entry(1), key=key(1))
    keys.found_nothing()
    assert not keys.absent(key(1)) and keys.absent(key(2))


def test_a_key_filter_that_cannot_be_read_is_tried_again() -> None:
    store = MemoryStore(Clock(), fail_reads=True)
    keys = KeyFilter(store)
    keys.found_nothing()
    assert not keys.ready and not keys.absent(key(1))
    store.fail_reads = False
    keys.found_nothing()
    assert keys.ready


# Request keys


def test_request_keys_are_bounded_and_start_over_on_a_reset() -> None:
    keys = RequestKeys(b"s" * 32, size=2)
    prints = [keys.fingerprint(b"POST", b"/v1/x", [(b"A", [b"%d" % n])], b"{}") for n in range(3)]
    assert len(set(prints)) == 3
    for n, fingerprint in enumerate(prints):
        keys.remember(fingerprint, key(n))
    assert [keys.key_of(p) for p in prints] == [None, key(1), key(2)]
    keys.on_change(Change(ChangeKind.DELETE, (key(1),)))
    assert keys.key_of(prints[1]) == key(1)  # the hot entries decide what is served
    keys.on_change(Change(ChangeKind.RESET, local=False))
    assert keys.key_of(prints[2]) is None


def test_request_fingerprints_depend_on_the_secret_and_ignore_content_length() -> None:
    one, other = RequestKeys(b"a" * 32), RequestKeys(b"b" * 32)
    headers = [(b"Authorization", [b"Bearer sk-1"])]
    assert one.fingerprint(b"POST", b"/x", headers, b"{}") != other.fingerprint(
        b"POST", b"/x", headers, b"{}"
    )
    assert one.fingerprint(b"POST", b"/x", headers, b"{}") == one.fingerprint(
        b"POST", b"/x", [*headers, (b"Content-Length", [b"2"])], b"{}"
    )


# The Bloom filter's bits


@settings(max_examples=200, deadline=None)
@given(st.lists(digests, max_size=300), st.lists(digests, max_size=30))
def test_a_key_once_added_is_never_called_absent(added: list[bytes], raw: list[bytes]) -> None:
    known = KeyBloom()
    for n, digest in enumerate(added):
        # Both spellings of a key reach the same bits: the hex a request is keyed
        # by, and the raw bytes the database keeps.
        if n % 2:
            known.add(digest.hex())
        else:
            known.add_digest(digest)
    assert all(known.might_hold(digest.hex()) for digest in added)
    # A handful of keys in a 1 MiB filter: another key is absent unless added.
    for digest in raw:
        assert known.might_hold(digest.hex()) == (digest in added)


def test_most_keys_never_added_are_known_absent() -> None:
    known = KeyBloom(expected=50_000)
    for n in range(50_000):
        known.add(key(n))
    false_maybes = sum(known.might_hold(key(f"other-{n}")) for n in range(20_000))
    assert false_maybes < 20_000 * 0.01
    assert all(known.might_hold(key(n)) for n in range(0, 50_000, 7))


def test_the_filter_is_sized_for_the_keys_expected() -> None:
    assert KeyBloom().size_bytes == MIN_BITS // 8
    assert KeyBloom(expected=2_000_000).size_bytes == (1 << 25) // 8
    assert KeyBloom(expected=10**12).size_bytes == MAX_BITS // 8
