"""
The management commands as a user runs them: ``python -m stasis <command>`` as
a real process, on the database of a live ``twistd -n stasis`` that recorded
calls to a fake upstream.

What is checked is what a user sees: the output, the exit status, what is
left in the database (through ``ls --json``), and what the daemon answers
after a command changed the database. Entries no daemon can record here (an
expired one, keys sharing a prefix, an entry from an older stasis, a Bedrock
stream) are written through the store, in this process, beside the daemon.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from attrs import frozen
from twisted.internet import reactor

from stasis.commands._human import size
from stasis.model import Entry, StoredRequest, TokenUsage
from stasis.store import open_store
from tests.daemon import Daemon, _environment, poll_until, start_daemon
from tests.fake_upstream import FakeUpstream, converse_stream_events

#: The contract is a second; the deadline leaves room for a machine busy with other tests.
EVICTED_WITHIN = 3.0
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
OPENAI_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test-manage"}
ANTHROPIC_HEADERS = {
    "content-type": "application/json",
    "x-api-key": "sk-ant-test-manage",
    "anthropic-version": "2023-06-01",
}


def stasis(
    command: str,
    *args: str,
    db: Path | str | None,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """``python -m stasis COMMAND [-d DB] ARGS…`` to completion; stdin is not a terminal."""
    environment = _environment()
    environment.pop("COLUMNS", None)
    environment.update(env or {})
    database = ["-d", str(db)] if db is not None else []
    return subprocess.run(
        [sys.executable, "-m", "stasis", command, *database, *args],
        cwd=cwd,
        env=environment,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command prints on stderr (and nothing on stdout)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def listed(db: Path, cwd: Path, *filters: str) -> list[dict[str, Any]]:
    result = stasis("ls", "--all", "--json", *filters, db=db, cwd=cwd)
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def chat(content: str, **extra: Any) -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    ).encode()


def call(
    daemon: Daemon, path: str, body: bytes, headers: dict[str, str] = OPENAI_HEADERS
) -> tuple[str, str, bytes]:
    """POST through the daemon: (X-Stasis-Status, X-Stasis-Key, body)."""
    status, answer_headers, answer = daemon.request("POST", path, body, headers)
    assert status == 200, answer
    return answer_headers["x-stasis-status"], answer_headers.get("x-stasis-key", ""), answer


async def put_entries(db: Path, *entries: Entry) -> None:
    """Write ``entries`` through the store, as another process beside the daemon would."""
    store = open_store(str(db), reactor)
    store.open()
    try:
        for entry in entries:
            await store.put(entry)
    finally:
        await store.close()


def entry(key: str, **fields: Any) -> Entry:
    values: dict[str, Any] = {
        "key": key,
        "status": 200,
        "headers": ((b"content-type", b"application/json"),),
        "body": b'{"answer": 42}',
        "created_at": time.time(),
        "path": "/v1/chat/completions",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "usage": TokenUsage.of(3, 4),
        "request": StoredRequest(body=chat("written in process")),
    }
    values.update(fields)
    return Entry(**values)


@frozen
class Recorded:
    """A daemon and the calls it recorded: (name → key)."""

    daemon: Daemon
    upstream: FakeUpstream
    keys: dict[str, str]
    folder: Path

    @property
    def db(self) -> Path:
        return self.daemon.db


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """
    Five calls recorded by one daemon, oldest first: two chat completions (the
    first then hit once), a streamed chat completion, an Anthropic stream in
    the namespace "ci", and a Responses API call with a TTL. Only read here.
    """
    folder = tmp_path_factory.mktemp("recorded")
    upstream = FakeUpstream().start()
    daemon = start_daemon(folder, upstream.url)
    try:
        keys = {}
        _, keys["chat"], _ = call(daemon, "/v1/chat/completions", chat("hi 0"))
        _, keys["chat2"], _ = call(daemon, "/v1/chat/completions", chat("hi 1"))
        _, keys["stream"], _ = call(daemon, "/v1/chat/completions", chat("stream me", stream=True))
        anthropic = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "hey"}],
        }
        _, keys["anthropic"], _ = call(
            daemon,
            "/v1/messages",
            json.dumps(anthropic).encode(),
            {**ANTHROPIC_HEADERS, "x-stasis-namespace": "ci"},
        )
        _, keys["responses"], _ = call(
            daemon,
            "/v1/responses",
            json.dumps({"model": "gpt-4o", "input": "hello"}).encode(),
            {**OPENAI_HEADERS, "x-stasis-ttl": "3600"},
        )
        assert call(daemon, "/v1/chat/completions", chat("hi 0"))[0] == "HIT"
        # Hits are counted in batches: wait until the database has this one.
        poll_until(lambda: daemon.get_json("/stats")["totalTokensSaved"] == 18)
        yield Recorded(daemon, upstream, keys, folder)
    finally:
        daemon.stop()
        upstream.stop()
    assert "Traceback" not in daemon.log, daemon.log


# --- ls ---------------------------------------------------------------------------


def test_ls_prints_a_table_newest_first(recorded: Recorded) -> None:
    result = stasis("ls", db=recorded.db, cwd=recorded.folder)
    assert (result.returncode, result.stderr) == (0, "")
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "KEY",
        "STORED",
        "(UTC)",
        "PROVIDER",
        "MODEL",
        "PATH",
        "NAMESPACE",
        "STATUS",
        "TOKENS",
        "HITS",
        "SIZE",
    ]
    order = ["responses", "anthropic", "stream", "chat2", "chat"]
    assert [row.split()[0] for row in rows] == [recorded.keys[name][:12] for name in order]
    cells = {name: row.split() for name, row in zip(order, rows, strict=True)}
    # key, date, time, provider, model, path, namespace, status, tokens, hits, size
    assert cells["chat"][3:10] == [
        "openai",
        "gpt-4o-mini",
        "/v1/chat/completions",
        "-",
        "200",
        "18",
        "1",
    ]
    assert cells["anthropic"][3:10] == [
        "anthropic",
        "claude-sonnet-4-5",
        "/v1/messages",
        "ci",
        "200",
        "17",
        "0",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", cells["chat"][1])
    assert re.fullmatch(r"\d+B", cells["chat"][10])


def test_ls_fits_a_narrow_terminal(recorded: Recorded) -> None:
    result = stasis("ls", db=recorded.db, cwd=recorded.folder, env={"COLUMNS": "80"})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    assert lines[0].split()[:4] == ["KEY", "STORED", "(UTC)", "MODEL"]
    assert [line.split()[0] for line in lines[1:3]] == [
        recorded.keys["responses"][:12],
        recorded.keys["anthropic"][:12],
    ]


def test_ls_json_has_every_field_with_full_keys(recorded: Recorded) -> None:
    result = stasis("ls", "--json", db=recorded.db, cwd=recorded.folder)
    assert (result.returncode, result.stderr) == (0, "")
    entries = json.loads(result.stdout)
    assert [e["key"] for e in entries] == [
        recorded.keys[name] for name in ("responses", "anthropic", "stream", "chat2", "chat")
    ]
    first = entries[-1]
    assert set(first) == {
        "key",
        "sharedKey",
        "storedAt",
        "expiresAt",
        "provider",
        "model",
        "namespace",
        "method",
        "path",
        "status",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "hits",
        "lastHitAt",
        "sizeBytes",
    }
    assert first["provider"] == "openai" and first["model"] == "gpt-4o-mini"
    assert (first["method"], first["path"], first["status"]) == (
        "POST",
        "/v1/chat/completions",
        200,
    )
    assert (first["inputTokens"], first["outputTokens"], first["totalTokens"]) == (11, 7, 18)
    assert (first["hits"], first["expiresAt"], first["namespace"]) == (1, None, "")
    assert ISO.match(first["storedAt"]) and ISO.match(first["lastHitAt"])
    assert first["sizeBytes"] > 100 and len(first["sharedKey"]) == 64
    ttl = entries[0]
    stored = time.mktime(time.strptime(ttl["storedAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    expires = time.mktime(time.strptime(ttl["expiresAt"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 3599 <= expires - stored <= 3601
    assert entries[1]["namespace"] == "ci"


@pytest.mark.parametrize(
    ("filters", "names"),
    [
        (["--provider", "anthropic"], ["anthropic"]),
        (["--namespace", "ci"], ["anthropic"]),
        (["--namespace", ""], ["responses", "stream", "chat2", "chat"]),
        (["--model", "gpt-4o"], ["responses"]),
        (["--path", "/v1/chat/completions", "--limit", "2"], ["stream", "chat2"]),
        (["--since", "1h", "--provider", "openai", "-n", "1"], ["responses"]),
        (["--since", "2999-01-01"], []),
        (["--until", "2000-01-01T00:00:00Z"], []),
        (["--search", "HI 1"], ["chat2"]),  # the prompt, in any case
        (["--search", "stream me"], ["stream"]),  # a streamed answer's text holds it too
        (["--search", "hey", "--provider", "anthropic"], ["anthropic"]),
        (["--search", "gpt-4o"], ["responses", "stream", "chat2", "chat"]),  # the model
        (["--search", "h_"], []),  # _ is itself
    ],
)
def test_ls_filters(recorded: Recorded, filters: list[str], names: list[str]) -> None:
    assert [
        e["key"]
        for e in json.loads(
            stasis("ls", "--json", *filters, db=recorded.db, cwd=recorded.folder).stdout
        )
    ] == [recorded.keys[name] for name in names]


def test_ls_says_when_there_is_more_and_when_nothing_matches(recorded: Recorded) -> None:
    limited = stasis("ls", "--limit", "2", db=recorded.db, cwd=recorded.folder)
    assert limited.returncode == 0
    assert len(limited.stdout.splitlines()) == 3
    assert limited.stderr == "(the newest 2 shown: --limit N or --all for more)\n"
    none = stasis("ls", "--model", "nothing-like-it", db=recorded.db, cwd=recorded.folder)
    assert (none.returncode, none.stdout, none.stderr) == (0, "", "no entries match\n")


def test_the_database_comes_from_stasis_db_or_the_current_folder(
    recorded: Recorded, tmp_path: Path
) -> None:
    from_env = stasis("ls", db=None, cwd=tmp_path, env={"STASIS_DB": str(recorded.db)})
    assert len(from_env.stdout.splitlines()) == 6
    here = stasis("stats", "--json", db=None, cwd=recorded.db.parent)
    assert json.loads(here.stdout)["totalEntries"] == 5


# --- show -------------------------------------------------------------------------


def test_show_prints_the_request_and_the_answer_pretty(recorded: Recorded) -> None:
    key = recorded.keys["chat"]
    result = stasis("show", key[:8], db=recorded.db, cwd=recorded.folder)
    assert (result.returncode, result.stderr) == (0, "")
    out = result.stdout
    assert f"key         {key}\n" in out
    assert "provider    openai\n" in out and "tokens      18 (11 in, 7 out)\n" in out
    assert "namespace   (default)\n" in out and "expires     never\n" in out
    request, answer = out.split("--- request ---\n")[1].split("--- answer ---\n")
    assert request.startswith("POST /v1/chat/completions\n\n{\n")
    assert '      "content": "hi 0"\n' in request  # indented: pretty-printed
    assert answer.startswith("HTTP 200\n")
    assert re.search(r"(?im)^content-type: application/json$", answer)
    assert '        "content": "echo #1: hi 0"\n' in answer
    assert "authorization" not in out.lower() and "sk-test-manage" not in out


def test_show_json_is_the_entry_its_request_and_its_answer(recorded: Recorded) -> None:
    key = recorded.keys["chat2"]
    result = stasis("show", "--json", key, db=recorded.db, cwd=recorded.folder)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["key"] == key and shown["totalTokens"] == 18
    assert shown["request"] == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "query": "",
        "headers": [],
        "ignored": [],
        "body": json.loads(chat("hi 1")),
        "bodyEncoding": "json",
    }
    response = shown["response"]
    assert (response["status"], response["stream"], response["bodyEncoding"]) == (
        200,
        False,
        "json",
    )
    assert response["body"]["choices"][0]["message"]["content"] == "echo #2: hi 1"
    assert ["Content-Type", "application/json"] in response["headers"]


def test_show_gives_a_stream_as_its_text_or_its_events(recorded: Recorded) -> None:
    key = recorded.keys["stream"]
    text = stasis("show", key[:12], db=recorded.db, cwd=recorded.folder)
    assert text.returncode == 0, text.stderr
    answer = text.stdout.split("--- answer ---\n")[1]
    assert answer.endswith(
        "(a stream of 7 events, shown as its text; --events for them)\necho #3: stream me\n"
    )
    events = stasis("show", key[:12], "--events", db=recorded.db, cwd=recorded.folder)
    raw = events.stdout.split("--- answer ---\n")[1].split("\n\n", 1)[1]
    assert raw.count("data: ") == 7 and raw.rstrip().endswith("data: [DONE]")
    assert '"delta":{"content":"echo "}' in raw
    as_json = json.loads(stasis("show", key, "--json", db=recorded.db, cwd=recorded.folder).stdout)
    response = as_json["response"]
    assert (response["stream"], response["text"]) == (True, "echo #3: stream me")
    assert [e["data"] for e in response["events"]][-1] == "[DONE]"
    assert all(isinstance(e["atMs"], int) for e in response["events"])


def test_show_reads_an_anthropic_stream_as_its_provider_does(recorded: Recorded) -> None:
    result = stasis("show", recorded.keys["anthropic"], db=recorded.db, cwd=recorded.folder)
    assert result.stdout.endswith("shown as its text; --events for them)\nhello #4\n")
    assert "namespace   ci\n" in result.stdout
    assert "anthropic-version: 2023-06-01\n" in result.stdout  # a header that is in the key


@pytest_twisted.ensureDeferred
async def test_show_rm_and_ambiguous_or_unknown_prefixes(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    twins = ["abcdef01" + "0" * 56, "abcdef02" + "0" * 56]
    old = "12345678" + "9" * 56
    await put_entries(db, entry(twins[0]), entry(twins[1]), entry(old, request=None))
    for command in ("show", "rm"):
        ambiguous = stasis(command, "abcdef", db=db, cwd=tmp_path)
        assert ambiguous.returncode == 1
        assert one_line(ambiguous) == (
            "stasis: abcdef is the start of several keys (abcdef0100000000…, "
            "abcdef0200000000…): give more of the key"
        )
        unknown = stasis(command, "fedcba9", db=db, cwd=tmp_path)
        assert unknown.returncode == 1
        assert one_line(unknown) == "stasis: no entry has a key starting with fedcba9"
    unique = stasis("show", "abcdef02", db=db, cwd=tmp_path)
    assert unique.returncode == 0 and f"key         {twins[1]}\n" in unique.stdout
    older = stasis("show", "1234567", db=db, cwd=tmp_path)
    request = older.stdout.split("--- request ---\n")[1].split("\n\n")[0]
    assert request == (
        "POST /v1/chat/completions\n(not kept: this entry was stored by an older stasis)"
    )
    assert json.loads(stasis("show", old, "--json", db=db, cwd=tmp_path).stdout)["request"] is None


@pytest_twisted.ensureDeferred
async def test_show_reads_a_bedrock_event_stream(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    events = converse_stream_events(7)
    timeline = []
    offset = 0
    for number, raw in enumerate(events):
        offset += len(raw)
        timeline.append((offset, number * 10))
    key = "b" * 64
    await put_entries(
        db,
        entry(
            key,
            provider="bedrock",
            model="anthropic.claude-3-haiku",
            path="/model/anthropic.claude-3-haiku/converse-stream",
            headers=((b"content-type", b"application/vnd.amazon.eventstream"),),
            body=b"".join(events),
            timeline=tuple(timeline),
        ),
    )
    text = stasis("show", key[:6], db=db, cwd=tmp_path)
    assert text.stdout.endswith("shown as its text; --events for them)\nbedrock #7\n")
    shown = stasis("show", key[:6], "--events", db=db, cwd=tmp_path).stdout
    assert (
        'event: contentBlockDelta\ndata: {"contentBlockIndex": 0, "delta": {"text": " #"}}\n'
        in (shown)
    )
    response = json.loads(stasis("show", key, "--json", db=db, cwd=tmp_path).stdout)["response"]
    assert response["bodyEncoding"] == "base64" and response["text"] == "bedrock #7"
    assert [e["atMs"] for e in response["events"]] == [n * 10 for n in range(len(events))]


# --- stats ------------------------------------------------------------------------


def test_stats_reports_what_get_stats_reports(recorded: Recorded) -> None:
    served = recorded.daemon.get_json("/stats")
    result = stasis("stats", "--json", db=recorded.db, cwd=recorded.folder)
    assert (result.returncode, result.stderr) == (0, "")
    stats = json.loads(result.stdout)
    assert set(stats) == {
        "totalEntries",
        "totalTokensSaved",
        "dbSizeBytes",
        "oldestEntry",
        "newestEntry",
        "storedBytes",
    }
    for name in ("totalEntries", "totalTokensSaved", "oldestEntry", "newestEntry", "storedBytes"):
        assert stats[name] == served[name]
    assert (stats["totalEntries"], stats["totalTokensSaved"]) == (5, 18)
    assert stats["dbSizeBytes"] > 0
    text = stasis("stats", db=recorded.db, cwd=recorded.folder).stdout.splitlines()
    assert text[:2] == ["entries        5", "tokens saved   18"]
    assert re.fullmatch(r"database size  [\d.]+ KiB \([\d,]+ bytes\)", text[2])
    assert (
        text[3] == f"stored size    {size(stats['storedBytes'])} ({stats['storedBytes']:,} bytes)"
    )
    assert text[4:] == [
        f"oldest entry   {served['oldestEntry']}",
        f"newest entry   {served['newestEntry']}",
    ]


# --- what cannot be done ----------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["ls"],
        ["show", "abcdef"],
        ["rm", "abcdef"],
        ["purge", "--yes"],
        ["prune"],
        ["stats", "--json"],
        ["export", "out.jsonl"],
    ],
)
def test_a_missing_database_is_one_line_and_is_not_created(
    tmp_path: Path, command: list[str]
) -> None:
    db = tmp_path / "nothing-here.db"
    result = stasis(command[0], *command[1:], db=db, cwd=tmp_path)
    assert result.returncode == 1
    assert one_line(result) == f"stasis: no cache database at {db}"
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("not a database, but long enough to have a header page of its own " * 20)
    result = stasis("ls", db=db, cwd=tmp_path)
    assert result.returncode == 1
    assert one_line(result).startswith(f"stasis: cannot use the cache database '{db}': ")


def test_a_database_server_that_does_not_answer_is_one_line(
    tmp_path: Path, closed_port: int
) -> None:
    pytest.importorskip("psycopg")
    db = f"postgresql://me:secret@127.0.0.1:{closed_port}/cache"
    url = stasis("stats", db=db, cwd=tmp_path)
    assert url.returncode == 1
    line = one_line(url)
    where = f"postgresql://me@127.0.0.1:{closed_port}/cache"
    assert line.startswith(f"stasis: cannot connect to the cache database {where}: ")
    assert "secret" not in line


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        (
            ["ls", "--since", "yesterday"],
            "stasis ls: error: --since 'yesterday' is not an ISO-8601 date or time (2024-01-15, "
            "2024-01-15T10:30Z) or a duration ago (90s, 12h, 7d) (see --help)",
        ),
        (
            ["purge", "--until", "12x", "--yes"],
            "stasis purge: error: --until '12x' is not an ISO-8601",
        ),
        (["ls", "--provider", "openia"], "stasis ls: error: --provider 'openia' is not one of"),
        (["ls", "--limit", "0"], "--limit must be a whole number of at least 1, not '0'"),
        (["ls", "--colour"], "stasis ls: error: option --colour not recognized (see --help)"),
        (["show"], "stasis show: error: give one KEY (or the first digits of one) (see --help)"),
        (["show", "abc"], "'abc' is too short: give at least 6 hex digits of the key"),
        (["rm", "xyzxyzxyz"], "stasis rm: error: 'xyzxyzxyz' is not a cache key"),
        (["rm", "abcdef", "abcdef"], "stasis rm: error: give one KEY"),
        (["export"], "stasis export: error: give one PATH (- for standard output or input)"),
        (["stats", "extra"], "stasis stats: error: Wrong number of arguments."),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(
    recorded: Recorded, command: list[str], complaint: str
) -> None:
    result = stasis(command[0], *command[1:], db=recorded.db, cwd=recorded.folder)
    assert result.returncode == 2
    assert complaint in one_line(result)


def test_purge_without_a_terminal_or_yes_refuses_and_removes_nothing(recorded: Recorded) -> None:
    result = stasis("purge", "--provider", "openai", db=recorded.db, cwd=recorded.folder)
    assert result.returncode == 2
    assert one_line(result) == (
        "stasis purge: error: stdin is not a terminal to ask on: give --yes to purge (see --help)"
    )
    assert len(listed(recorded.db, recorded.folder)) == 5


# --- rm, purge, prune on a live daemon --------------------------------------------


def test_rm_removes_an_entry_the_daemon_then_fetches_again(
    start: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    daemon = start()
    body = chat("remove me")
    status, key, _ = call(daemon, "/v1/chat/completions", body)
    assert status == "MISS"
    assert call(daemon, "/v1/chat/completions", body)[0] == "HIT"
    calls = len(upstream.calls())

    result = stasis("rm", key[:12], db=daemon.db, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert re.fullmatch(
        rf"removed {key} \(openai gpt-4o-mini: POST /v1/chat/completions, stored "
        r"\d{4}-\d\d-\d\dT[\d:.]+Z\)\n",
        result.stdout,
    )
    # The daemon hears of the delete through the database: a MISS within a second.
    poll_until(lambda: call(daemon, "/v1/chat/completions", body)[0] == "MISS", EVICTED_WITHIN)
    assert len(upstream.calls()) == calls + 1

    # The MISS stored the answer again, under the same key; removed once more, it is gone.
    assert stasis("rm", key, db=daemon.db, cwd=tmp_path).stdout.startswith(f"removed {key} (")
    gone = stasis("rm", key, db=daemon.db, cwd=tmp_path)
    assert gone.returncode == 1
    assert one_line(gone) == f"stasis: no entry with key {key}"


def test_purge_yes_removes_only_what_its_filters_pick(
    start: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    daemon = start()
    kept = [call(daemon, "/v1/chat/completions", chat(f"keep {n}"))[1] for n in range(2)]
    anthropic = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "x"}],
        }
    ).encode()
    call(daemon, "/v1/messages", anthropic, ANTHROPIC_HEADERS)

    result = stasis("purge", "--yes", "--provider", "anthropic", db=daemon.db, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "removed 1 entry\n", "")
    assert sorted(e["key"] for e in listed(daemon.db, tmp_path)) == sorted(kept)
    calls = len(upstream.calls())
    poll_until(
        lambda: call(daemon, "/v1/messages", anthropic, ANTHROPIC_HEADERS)[0] == "MISS",
        EVICTED_WITHIN,
    )
    assert call(daemon, "/v1/chat/completions", chat("keep 0"))[0] == "HIT"
    assert len(upstream.calls()) == calls + 1

    everything = stasis("purge", "-y", db=daemon.db, cwd=tmp_path)
    assert everything.stdout == "removed 3 entries\n"
    assert listed(daemon.db, tmp_path) == []


def _ask_on_a_terminal(
    args: list[str], db: Path, cwd: Path, answer: bytes | None
) -> tuple[int, str, str]:
    """Run ``purge`` with a terminal for stdin; type ``answer`` at its question, or Ctrl-C."""
    leader, follower = pty.openpty()
    environment = _environment()
    process = subprocess.Popen(
        [sys.executable, "-m", "stasis", "purge", "-d", str(db), *args],
        cwd=cwd,
        env=environment,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    try:
        assert process.stderr is not None
        asked = b""
        deadline = time.monotonic() + 30
        while b"[y/N] " not in asked:
            assert time.monotonic() < deadline, asked
            ready, _, _ = select.select([process.stderr], [], [], 0.1)
            if ready:
                chunk = os.read(process.stderr.fileno(), 4096)
                assert chunk, asked
                asked += chunk
        if answer is None:
            process.send_signal(signal.SIGINT)
        else:
            os.write(leader, answer)
        out, err = process.communicate(timeout=30)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return process.returncode, out.decode(), (asked + err).decode()


@pytest_twisted.ensureDeferred
async def test_purge_on_a_terminal_asks_first(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    models = ["o1", "gpt-4o", "gpt-4o"]
    await put_entries(db, *(entry(f"{n:064x}", model=model) for n, model in enumerate(models)))

    status, out, err = _ask_on_a_terminal(["--model", "gpt-4o"], db, tmp_path, b"n\n")
    assert (status, out) == (1, "")
    assert err == "remove 2 entries matching model=gpt-4o? [y/N] stasis: nothing removed\n"
    assert len(listed(db, tmp_path)) == 3

    status, out, err = _ask_on_a_terminal([], db, tmp_path, None)
    assert (status, out) == (130, "")
    assert err == "remove 3 entries (every entry in the cache)? [y/N] \nstasis: interrupted\n"

    status, out, err = _ask_on_a_terminal(["--model", "gpt-4o"], db, tmp_path, b"yes\n")
    assert (status, out) == (0, "removed 2 entries\n")
    assert [e["model"] for e in listed(db, tmp_path)] == ["o1"]


@pytest_twisted.ensureDeferred
async def test_prune_removes_only_expired_entries(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    now = time.time()
    expired, lasting, forever = "e" * 64, "f" * 64, "0" * 64
    await put_entries(
        db,
        entry(expired, created_at=now - 20, expires_at=now - 10),
        entry(lasting, expires_at=now + 3600),
        entry(forever),
    )
    result = stasis("prune", db=db, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "removed 1 expired entry\n", "")
    assert sorted(e["key"] for e in listed(db, tmp_path)) == [forever, lasting]
    assert stasis("prune", db=db, cwd=tmp_path).stdout == "removed 0 expired entries\n"


def test_a_closed_pipe_ends_ls_quietly(recorded: Recorded) -> None:
    """``stasis ls --all | head -1``: no traceback, no complaint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "stasis", "ls", "--json", "-d", str(recorded.db)],
        cwd=recorded.folder,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before it writes: every write fails
    err = process.stderr.read()
    process.wait(timeout=30)
    assert (process.returncode, err) == (141, b"")
