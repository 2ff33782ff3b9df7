"""
Export and import against real stores (the in-memory double and SQLite), files on disk and git.

What a user relies on: the same cache exports the same bytes; export, import
into a fresh cache and export again changes nothing; two branches that
recorded different calls merge without a conflict; no credential reaches a
file; a bad cassette imports nothing and says where it is bad.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import pytest_twisted
from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail

from stasis.cassettes import CassetteError, export_cassette, import_cassette
from stasis.model import Entry, StoredRequest, TokenUsage
from stasis.store import Store, StoreError, open_store
from tests.eventstream import encode_event
from tests.memory_store import MemoryStore
from tests.store_support import key, make_entry

StoreMaker = Callable[[], Store]

SECRET = "sk-proj-SENTINEL-xyzzy-Credential-QwErTy"
ORGANIZATION = "org-SENTINEL-Organization-PlUgH"


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    """Makes fresh, open stores of one implementation; closes them after the test."""
    made: list[Store] = []

    def make() -> Store:
        if request.param == "memory":
            store: Store = MemoryStore(reactor)
        else:
            (tmp_path / "db").mkdir(exist_ok=True)
            store = open_store(str(tmp_path / "db" / f"cache-{len(made)}.db"), reactor)
        store.open()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


def recorded(n: int, **fields: object) -> Entry:
    """An entry as a recent stasis stores it: shared key and request kept."""
    values: dict[str, object] = {
        "shared_key": key(f"shared-{n}"),
        "created_at": 1_705_314_600.0 + n,
        "request": StoredRequest(
            headers=(("anthropic-version", "2023-06-01"),),
            body=json.dumps(
                {"model": "claude", "messages": [{"content": f"question {n}"}]}
            ).encode(),
        ),
    }
    values.update(fields)
    return make_entry(n, **values)


def streamed(n: int) -> Entry:
    events = [
        b'event: message_start\ndata: {"type":"message_start"}\n\n',
        f'event: content_block_delta\ndata: {{"type":"content_block_delta","n":{n}}}\n\n'.encode(),
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    ends = [sum(len(e) for e in events[: i + 1]) for i in range(3)]
    return recorded(
        n,
        headers=((b"content-type", b"text/event-stream"), (b"request-id", b"req_011")),
        body=b"".join(events),
        timeline=tuple(zip(ends, [0, 40, 41], strict=True)),
        provider="anthropic",
    )


def bedrock_streamed(n: int) -> Entry:
    body = encode_event("chunk", {"bytes": "eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0=", "p": "abc"})
    return recorded(
        n,
        headers=((b"content-type", b"application/vnd.amazon.eventstream"),),
        body=body + encode_event("metadata", {"usage": {"totalTokens": n}}),
        provider="bedrock",
    )


def cache_of(numbers: Sequence[int]) -> list[Entry]:
    kinds = [recorded, streamed, bedrock_streamed]
    return [kinds[n % 3](n) for n in numbers]


async def filled(make: StoreMaker, entries: Sequence[Entry]) -> Store:
    store = make()
    await store.put_all(list(entries))
    return store


def files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


async def everything(store: Store) -> list[Entry]:
    page = await store.list_entries(limit=10_000)
    return await store.get_many(sorted(info.key for info in page.entries))


# Round trips and determinism


@pytest_twisted.ensureDeferred
async def test_export_import_export_is_byte_identical_as_a_directory(
    stores: StoreMaker, tmp_path: Path
) -> None:
    original = await filled(stores, cache_of(range(7)))
    assert await export_cassette(original, str(tmp_path / "first")) == 7
    copy = stores()
    assert await import_cassette(copy, str(tmp_path / "first")) == 7
    await export_cassette(copy, str(tmp_path / "second"))
    assert files(tmp_path / "first") == files(tmp_path / "second")
    assert sorted(files(tmp_path / "first")) == sorted(
        f"{key(f'shared-{n}')}.json" for n in range(7)
    )


@pytest_twisted.ensureDeferred
async def test_export_import_export_is_byte_identical_as_json_lines(
    stores: StoreMaker, tmp_path: Path
) -> None:
    original = await filled(stores, cache_of(range(7)))
    first, second = tmp_path / "first.jsonl", tmp_path / "second.JSONL"
    await export_cassette(original, str(first))
    copy = stores()
    await import_cassette(copy, str(first))
    await export_cassette(copy, str(second))
    assert first.read_bytes() == second.read_bytes()
    lines = first.read_bytes().split(b"\n")
    assert lines[-1] == b""
    keys = [json.loads(line)["key"] for line in lines[:-1]]
    assert keys == sorted(keys)
    cassettes = sorted(name for name in os.listdir(tmp_path) if name != "db")
    assert cassettes == ["first.jsonl", "second.JSONL"]  # no temporary file left


@pytest_twisted.ensureDeferred
async def test_an_imported_answer_is_the_recorded_one_in_the_shared_scope(
    stores: StoreMaker, tmp_path: Path
) -> None:
    entries = cache_of(range(3))
    original = await filled(stores, entries)
    await original.add_hits({entries[0].key: (5, 1_800_000_000.0)})
    await export_cassette(original, str(tmp_path / "cassette"))
    copy = stores()
    await import_cassette(copy, str(tmp_path / "cassette"))
    for entry in entries:
        back = await copy.get(entry.shared_key, request=True)
        assert back is not None
        assert (back.key, back.shared_key) == (entry.shared_key, entry.shared_key)
        assert (back.body, back.timeline, back.status) == (entry.body, entry.timeline, entry.status)
        assert back.headers == tuple(h for h in entry.headers if h[0] != b"request-id")
        assert back.request == entry.request
        assert (back.hit_count, back.last_hit_at) == (0, None)


@pytest_twisted.ensureDeferred
async def test_the_same_cache_exports_the_same_bytes_whatever_its_history(
    stores: StoreMaker, tmp_path: Path
) -> None:
    entries = cache_of(range(6))
    one = await filled(stores, entries)
    other = stores()
    for entry in reversed(entries):
        await other.put(entry)
    await other.add_hits({entries[1].key: (3, 1_800_000_000.0)})  # hits are not exported
    for name, store in [("a", one), ("b", other), ("c", one)]:
        await export_cassette(store, str(tmp_path / name))
        await export_cassette(store, str(tmp_path / f"{name}.jsonl"))
    assert files(tmp_path / "a") == files(tmp_path / "b") == files(tmp_path / "c")
    jsonl = {(tmp_path / f"{name}.jsonl").read_bytes() for name in "abc"}
    assert len(jsonl) == 1


@pytest_twisted.ensureDeferred
async def test_stdout_and_stdin_carry_json_lines(stores: StoreMaker, tmp_path: Path) -> None:
    original = await filled(stores, cache_of(range(4)))
    out = io.BytesIO()
    assert await export_cassette(original, "-", stdout=out) == 4
    await export_cassette(original, str(tmp_path / "file.jsonl"))
    assert out.getvalue() == (tmp_path / "file.jsonl").read_bytes()
    copy = stores()
    assert await import_cassette(copy, "-", stdin=io.BytesIO(out.getvalue())) == 4
    assert {e.key for e in await everything(copy)} == {key(f"shared-{n}") for n in range(4)}


# One entry per portable key


@pytest_twisted.ensureDeferred
async def test_a_shared_entry_wins_over_caller_scoped_ones_of_its_portable_key(
    stores: StoreMaker, tmp_path: Path
) -> None:
    portable = key("portable")
    shared = recorded(1, key=portable, shared_key=portable, body=b'{"scope":"shared"}')
    newer_caller = recorded(2, shared_key=portable, body=b'{"scope":"caller"}')
    store = await filled(stores, [shared, newer_caller])
    assert await export_cassette(store, str(tmp_path / "out")) == 1
    (document,) = [json.loads(data) for data in files(tmp_path / "out").values()]
    assert document["key"] == portable
    assert document["response"]["body"] == {"scope": "shared"}


@pytest_twisted.ensureDeferred
async def test_among_caller_scoped_entries_the_newest_is_exported(
    stores: StoreMaker, tmp_path: Path
) -> None:
    portable = key("portable")
    older = recorded(1, shared_key=portable, created_at=100.0, body=b'"older"')
    newer = recorded(2, shared_key=portable, created_at=200.0, body=b'"newer"')
    legacy = make_entry(3)  # stored before shared keys: exported under its own key
    store = await filled(stores, [older, newer, legacy])
    await export_cassette(store, str(tmp_path / "out.jsonl"))
    documents = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    by_key = {document["key"]: document for document in documents}
    assert sorted(by_key) == sorted([portable, key(3)])
    assert by_key[portable]["response"]["body"] == "newer"
    assert by_key[key(3)]["request"] is None


# The directory


@pytest_twisted.ensureDeferred
async def test_a_directory_export_mirrors_the_cache_and_leaves_other_files(
    stores: StoreMaker, tmp_path: Path
) -> None:
    directory = tmp_path / "cassettes"
    directory.mkdir()
    stale = directory / f"{key('gone')}.json"
    stale.write_text("{}")
    (directory / "README.md").write_text("recorded calls")
    (directory / "notes.json").write_text("[]")
    store = await filled(stores, cache_of([1, 2]))
    await export_cassette(store, str(directory))
    names = sorted(os.listdir(directory))
    expected = sorted([f"{key('shared-1')}.json", f"{key('shared-2')}.json"])
    assert names == sorted([*expected, "README.md", "notes.json"])
    await store.delete(cache_of([1])[0].key)
    await export_cassette(store, str(directory))
    assert f"{key('shared-1')}.json" not in os.listdir(directory)


@pytest_twisted.ensureDeferred
async def test_a_file_is_indented_readable_and_ends_in_a_newline(
    stores: StoreMaker, tmp_path: Path
) -> None:
    store = await filled(stores, [recorded(1, body='{"text":"Grüße"}'.encode())])
    await export_cassette(store, str(tmp_path / "out"))
    (text,) = [data.decode("utf-8") for data in files(tmp_path / "out").values()]
    assert text.startswith('{\n  "stasis": 1,\n  "key": "')
    assert '\n      ["content-type", "application/json"]\n' in text
    assert '"text": "Grüße"' in text
    assert text.endswith("}\n")


@pytest_twisted.ensureDeferred
async def test_files_get_the_mode_any_new_file_gets(tmp_path: Path) -> None:
    store = MemoryStore(reactor)
    await store.put(recorded(1))
    await export_cassette(store, str(tmp_path / "dir"))
    await export_cassette(store, str(tmp_path / "all.jsonl"))
    (tmp_path / "plain").write_text("")
    expected = (tmp_path / "plain").stat().st_mode
    written = [tmp_path / "all.jsonl", *(tmp_path / "dir").iterdir()]
    assert [path.stat().st_mode for path in written] == [expected, expected]


def git(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
    )


@pytest_twisted.ensureDeferred
async def test_branches_that_recorded_different_calls_merge_without_conflict(
    stores: StoreMaker, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    cassettes = str(repository / "cassettes")
    git(repository, "init", "-q", "-b", "main")
    await export_cassette(await filled(stores, cache_of([0, 1])), cassettes)
    git(repository, "add", "-A")
    git(repository, "commit", "-qm", "common calls")
    for branch, numbers in [("left", [0, 1, 2, 3]), ("right", [0, 1, 4, 5])]:
        git(repository, "checkout", "-qb", branch, "main")
        await export_cassette(await filled(stores, cache_of(numbers)), cassettes)
        git(repository, "add", "-A")
        assert git(repository, "commit", "-qm", branch).returncode == 0
    merge = git(repository, "merge", "--no-edit", "left")
    assert merge.returncode == 0, merge.stdout + merge.stderr
    merged = stores()
    assert await import_cassette(merged, cassettes) == 6
    assert {e.key for e in await everything(merged)} == {key(f"shared-{n}") for n in range(6)}


# No credential


@pytest_twisted.ensureDeferred
async def test_no_exported_byte_holds_a_credential_or_an_account(
    stores: StoreMaker, tmp_path: Path
) -> None:
    entry = recorded(
        1,
        headers=(
            (b"content-type", b"application/json"),
            (b"openai-organization", ORGANIZATION.encode()),
            (b"openai-project", f"proj_{ORGANIZATION}".encode()),
            (b"set-cookie", f"session={SECRET}; HttpOnly".encode()),
            (b"x-request-id", f"req_{SECRET}".encode()),
            (b"cf-ray", f"{ORGANIZATION}-IAD".encode()),
        ),
        request=StoredRequest(
            query=f"key={SECRET}&alt=sse",
            headers=(
                ("authorization", f"Bearer {SECRET}"),
                ("x-api-key", SECRET),
                ("api-key", SECRET),
                ("openai-organization", ORGANIZATION),
                ("openai-project", ORGANIZATION),
            ),
            body=b'{"model":"gpt-4o"}',
        ),
    )
    store = await filled(stores, [entry, streamed(2)])
    await export_cassette(store, str(tmp_path / "dir"))
    await export_cassette(store, str(tmp_path / "all.jsonl"))
    written = b"".join(files(tmp_path / "dir").values()) + (tmp_path / "all.jsonl").read_bytes()
    assert b"gpt-4o" in written
    for sentinel in (SECRET, ORGANIZATION):
        for start in range(len(sentinel) - 7):
            assert sentinel[start : start + 8].encode() not in written


# Import errors: one line naming the place, and nothing stored


async def refused(store: Store, path: str, stdin: bytes | None = None) -> str:
    before = await everything(store)
    source = None if stdin is None else io.BytesIO(stdin)
    with pytest.raises(CassetteError) as caught:
        await import_cassette(store, path, stdin=source)
    assert await everything(store) == before
    message = str(caught.value)
    assert "\n" not in message
    return message


async def exported_lines(make: StoreMaker, tmp_path: Path, numbers: Sequence[int]) -> list[bytes]:
    path = tmp_path / "source.jsonl"
    await export_cassette(await filled(make, cache_of(numbers)), str(path))
    return path.read_bytes().splitlines(keepends=True)


@pytest_twisted.ensureDeferred
async def test_bad_json_is_named_by_its_line_and_nothing_is_imported(
    stores: StoreMaker, tmp_path: Path
) -> None:
    lines = await exported_lines(stores, tmp_path, range(4))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join([*lines[:2], b'{"stasis": 1,\n', *lines[2:]]))
    target = await filled(stores, [make_entry(99)])
    message = await refused(target, str(bad))
    assert message.startswith(f"{bad}:3: not JSON: ")


@pytest_twisted.ensureDeferred
async def test_bad_json_in_a_directory_file_is_named_by_its_line(
    stores: StoreMaker, tmp_path: Path
) -> None:
    directory = tmp_path / "cassettes"
    await export_cassette(await filled(stores, cache_of(range(3))), str(directory))
    victim = directory / f"{key('shared-1')}.json"
    lines = victim.read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace(",", ",,")
    victim.write_text("".join(lines))
    message = await refused(stores(), str(directory))
    assert message.startswith(f"{victim}:5: not JSON: ")


@pytest_twisted.ensureDeferred
async def test_another_format_version_is_refused(stores: StoreMaker, tmp_path: Path) -> None:
    lines = await exported_lines(stores, tmp_path, range(2))
    lines[1] = lines[1].replace(b'{"stasis":1,', b'{"stasis":2,')
    message = await refused(stores(), "-", stdin=b"".join(lines))
    assert message == "<stdin>:2: stasis: format version 2 is not one this stasis reads (1)"


@pytest_twisted.ensureDeferred
async def test_a_file_not_named_by_its_key_is_refused(stores: StoreMaker, tmp_path: Path) -> None:
    directory = tmp_path / "cassettes"
    await export_cassette(await filled(stores, cache_of(range(2))), str(directory))
    source = directory / f"{key('shared-1')}.json"
    renamed = directory / f"{key('elsewhere')}.json"
    source.rename(renamed)
    message = await refused(stores(), str(directory))
    assert message == (f"{renamed}:3: key {key('shared-1')} is not the one the file is named for")


@pytest_twisted.ensureDeferred
async def test_a_json_file_that_is_not_an_entry_is_refused(
    stores: StoreMaker, tmp_path: Path
) -> None:
    directory = tmp_path / "cassettes"
    await export_cassette(await filled(stores, cache_of(range(2))), str(directory))
    (directory / "notes.txt").write_text("not read")
    (directory / "package.json").write_text('{"name": "x"}')
    message = await refused(stores(), str(directory))
    assert (
        message
        == f'{directory / "package.json"}:1: not a stasis cassette entry (no "stasis" field)'
    )


@pytest_twisted.ensureDeferred
async def test_a_duplicate_key_is_refused_naming_both_lines(
    stores: StoreMaker, tmp_path: Path
) -> None:
    lines = await exported_lines(stores, tmp_path, range(3))
    path = tmp_path / "twice.jsonl"
    path.write_bytes(b"".join([*lines, b"\n", lines[0]]))
    message = await refused(stores(), str(path))
    first_key = json.loads(lines[0])["key"]
    assert message == f"{path}:5: key {first_key} is already at {path}:1"


@pytest_twisted.ensureDeferred
async def test_a_missing_path_is_refused(stores: StoreMaker, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert await refused(stores(), str(missing)) == f"{missing}: no such file or directory"


# Atomicity of exports, progress


class FailingReads(MemoryStore):
    """Lists its entries, then fails to read their answers."""

    def get_many(self, keys: Sequence[str]) -> Deferred[list[Entry]]:
        return fail(StoreError("disk I/O error"))


@pytest_twisted.ensureDeferred
async def test_a_failed_export_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "cassette.jsonl"
    path.write_bytes(b"previous\n")
    store = FailingReads(reactor)
    await store.put(recorded(1))
    with pytest.raises(StoreError):
        await export_cassette(store, str(path))
    assert path.read_bytes() == b"previous\n"
    assert os.listdir(tmp_path) == ["cassette.jsonl"]


@pytest_twisted.ensureDeferred
async def test_an_export_that_cannot_write_is_a_cassette_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    store = MemoryStore(reactor)
    await store.put(recorded(1))
    with pytest.raises(CassetteError) as caught:
        await export_cassette(store, str(tmp_path / "file" / "cassettes"))
    assert str(caught.value) == f"{tmp_path / 'file' / 'cassettes'}: Not a directory"


@pytest_twisted.ensureDeferred
async def test_progress_is_reported_now_and_then_and_at_the_end(tmp_path: Path) -> None:
    store = MemoryStore(reactor)
    base = recorded(0)
    await store.put_all(
        [
            evolve(base, key=key(n), shared_key=key(f"s{n}"), usage=TokenUsage(n, 0, n))
            for n in range(1_250)
        ]
    )
    exported: list[tuple[int, int]] = []
    assert (
        await export_cassette(
            store, str(tmp_path / "all.jsonl"), progress=lambda *p: exported.append(p)
        )
        == 1_250
    )
    imported: list[tuple[int, int]] = []
    copy = MemoryStore(reactor)
    await import_cassette(copy, str(tmp_path / "all.jsonl"), progress=lambda *p: imported.append(p))
    for calls in (exported, imported):
        assert 3 <= len(calls) <= 10
        assert calls[-1] == (1_250, 1_250)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        assert {total for _, total in calls} == {1_250}
    assert len(copy.entries) == 1_250
