"""
The management commands on a PostgreSQL database, as a user runs them:
``python -m stasis <command> -d postgresql://…`` as a real process.

Cassettes move between the engines byte for byte (SQLite → PostgreSQL →
SQLite); ``ls``, ``show``, ``rm``, ``purge`` and ``stats`` work on a URL and
never print its password; and what a command removes reaches a store open on
the same database (a daemon's) within a second.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from stasis.model import ChangeKind, Entry, StoredRequest, TokenUsage
from stasis.store import Store, open_store
from tests.store_support import key, make_entry
from tests.test_manage_cassettes import stasis
from tests.test_store_postgres import WITHIN, Heard, names

pytest.importorskip("psycopg")

#: Not a password the server checks (the test servers trust 127.0.0.1), but
#: one a user would have written, which nothing may print.
PASSWORD = "pw-Wh1sp3r-cli"


def with_password(url: str) -> str:
    """``url`` with :data:`PASSWORD` in it, unless it has a password of its own."""
    parts = urlsplit(url)
    if parts.password:
        return url
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{PASSWORD}@{host}").geturl()


def the_password(url: str) -> str:
    password = urlsplit(url).password
    assert password
    return password


def recorded_entries() -> list[Entry]:
    """Entries as daemons record them: requests, a stream, namespaces, samples, expiries."""
    chat = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "%d"}]}'
    entries = [
        make_entry(
            n,
            created_at=1_700_000_000.0 + n * 1.5,
            namespace=["", "ci", "caf\u00e9"][n % 3],
            expires_at=None if n % 2 else 1_800_000_000.25,
            request=StoredRequest(headers=(("accept", "application/json"),), body=chat % n),
            usage=TokenUsage(n, 2 * n, 3 * n),
            sample=n % 2,
        )
        for n in range(12)
    ]
    entries.append(
        make_entry(
            "stream",
            headers=((b"content-type", b"text/event-stream"),),
            body=b'data: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n',
            timeline=((15, 120), (30, 250), (44, 260)),
            request=StoredRequest(body=b'{"stream": true}'),
        )
    )
    return entries


async def filled(db: str, entries: list[Entry]) -> None:
    store = open_store(db, reactor)
    store.open()
    try:
        await store.put_all(entries)
    finally:
        await store.close()


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest_twisted.ensureDeferred
async def test_cassettes_move_between_the_engines_byte_for_byte(
    postgres_url: str, tmp_path: Path
) -> None:
    entries = recorded_entries()
    sqlite = tmp_path / "recorded.db"
    await filled(str(sqlite), entries)
    postgres = with_password(postgres_url)
    count = len(entries)

    for done in (
        stasis("export", "sqlite.jsonl", db=sqlite, cwd=tmp_path),
        stasis("export", "sqlite-files", db=sqlite, cwd=tmp_path),
    ):
        assert done.returncode == 0, done.stderr
    imported = stasis("import", "sqlite.jsonl", db=postgres, cwd=tmp_path)
    assert (imported.returncode, imported.stdout) == (0, b"")
    assert imported.stderr == f"imported {count} entries from sqlite.jsonl\n".encode()
    exported = stasis("export", "postgres.jsonl", db=postgres, cwd=tmp_path)
    assert exported.stderr == f"exported {count} entries to postgres.jsonl\n".encode()
    assert stasis("export", "postgres-files", db=postgres, cwd=tmp_path).returncode == 0

    lines = (tmp_path / "sqlite.jsonl").read_bytes()
    assert (tmp_path / "postgres.jsonl").read_bytes() == lines
    assert folder_bytes(tmp_path / "postgres-files") == folder_bytes(tmp_path / "sqlite-files")
    assert len(lines.splitlines()) == count

    # And back, into a new SQLite file (which the import creates).
    back = stasis("import", "-", db=tmp_path / "back.db", cwd=tmp_path, stdin=lines)
    assert back.stderr == f"imported {count} entries from standard input\n".encode()
    assert stasis("export", "-", db=tmp_path / "back.db", cwd=tmp_path).stdout == lines
    for done in (imported, exported, back):
        assert the_password(postgres).encode() not in done.stdout + done.stderr


@pytest_twisted.ensureDeferred
async def test_ls_show_rm_purge_and_stats_on_a_url_never_show_its_password(
    postgres_url: str, tmp_path: Path
) -> None:
    postgres = with_password(postgres_url)
    password = the_password(postgres).encode()
    entries = recorded_entries()
    await filled(postgres, entries)
    seen = b""

    listed = stasis("ls", "--all", "--json", db=postgres, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted(item["key"] for item in json.loads(listed.stdout)) == sorted(
        entry.key for entry in entries
    )
    table = stasis("ls", "--namespace", "ci", db=postgres, cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.count(b"\n") == 1 + 4
    shown = stasis("show", key(4)[:10], "--json", db=postgres, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["key"] == key(4)
    removed = stasis("rm", key(4)[:10], db=postgres, cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    purged = stasis("purge", "--namespace", "ci", "--yes", db=postgres, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    stats = stasis("stats", "--json", db=postgres, cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert figures["totalEntries"] == len(entries) - 4 == 9
    assert figures["dbSizeBytes"] > 0
    missing = stasis("show", key(4), db=postgres, cwd=tmp_path)
    assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1
    for done in (listed, table, shown, removed, purged, stats, missing):
        seen += done.stdout + done.stderr

    nowhere = postgres.rpartition("/")[0] + "/no_such_database"
    refused = stasis("ls", db=nowhere, cwd=tmp_path)
    assert refused.returncode == 1 and refused.stdout == b""
    (line,) = refused.stderr.decode().splitlines()
    assert line.startswith("stasis: cannot connect to the cache database postgresql://")
    assert 'database "no_such_database" does not exist' in line
    seen += refused.stderr
    assert password not in seen and b"Traceback" not in seen


async def run_in_thread(
    command: str, *args: str, db: str, cwd: Path
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run a command without holding up the reactor; its result, and when it exited."""
    done: subprocess.CompletedProcess[bytes] = await deferToThread(
        stasis, command, *args, db=db, cwd=cwd
    )
    return done, time.monotonic()


@pytest_twisted.ensureDeferred
async def test_what_a_command_removes_reaches_an_open_store_within_a_second(
    postgres_url: str, tmp_path: Path
) -> None:
    await filled(postgres_url, [make_entry(n, namespace=str(n % 2)) for n in range(200)])
    daemon: Store = open_store(postgres_url, reactor)
    daemon.open()
    heard = Heard(daemon)
    try:
        removed, exited = await run_in_thread("rm", key(7), db=postgres_url, cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        assert await heard.wait(names(ChangeKind.DELETE, key(7))) - exited < WITHIN

        mark = len(heard.changes)
        purged, exited = await run_in_thread(
            "purge", "--namespace", "0", "--yes", db=postgres_url, cwd=tmp_path
        )
        assert purged.returncode == 0, purged.stderr
        evens = [key(n) for n in range(0, 200, 2)]
        assert await heard.wait(names(ChangeKind.DELETE, *evens), mark) - exited < WITHIN
        assert len(heard.external(mark)) <= 2  # a hundred keys, in one change (two at most)
        assert await daemon.get(key(8)) is None
    finally:
        await daemon.close()
