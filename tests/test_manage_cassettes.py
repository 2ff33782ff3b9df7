"""
``stasis export`` and ``stasis import`` as a user runs them, around live daemons:
record with one daemon and one API key, export while it runs, import into
another database, and the calls are answered there as hits, with another key
and an upstream that is never called.

Skipped until :mod:`stasis.cassettes` (written on another branch) is here.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from stasis.model import Entry, StoredRequest
from stasis.store import open_store
from tests.daemon import Daemon, _environment, poll_until

pytest.importorskip("stasis.cassettes")

OPENAI_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test-RECORDER"}
CI_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test-CI-other"}


def stasis(
    command: str, *args: str, db: Path | str, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m stasis COMMAND -d DB ARGS…``, stdin and stderr not terminals."""
    return subprocess.run(
        [sys.executable, "-m", "stasis", command, "-d", str(db), *args],
        cwd=cwd,
        env=_environment(),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


def chat(content: str, **extra: Any) -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    ).encode()


CALLS = [chat("one"), chat("two"), chat("three", stream=True)]


def call(daemon: Daemon, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    status, answer_headers, answer = daemon.request("POST", "/v1/chat/completions", body, headers)
    return status, answer_headers.get("x-stasis-status", ""), answer


def test_export_while_recording_then_import_answers_another_key_elsewhere(
    start: Any, make_upstream: Any, tmp_path: Path
) -> None:
    recorder = start(db=tmp_path / "recorder.db")
    answers = [call(recorder, body, OPENAI_HEADERS)[2] for body in CALLS]

    folder = stasis("export", "cassettes", db=recorder.db, cwd=tmp_path)
    assert (folder.returncode, folder.stdout) == (0, b"")
    assert folder.stderr == b"exported 3 entries to cassettes\n"
    assert len(list((tmp_path / "cassettes").glob("*.json"))) == 3
    lines = stasis("export", "recorded.jsonl", db=recorder.db, cwd=tmp_path)
    assert lines.stderr == b"exported 3 entries to recorded.jsonl\n"
    recorded = (tmp_path / "recorded.jsonl").read_bytes()
    assert len(recorded.splitlines()) == 3
    assert b"sk-test-RECORDER" not in recorded
    piped = stasis("export", "-", db=recorder.db, cwd=tmp_path)
    assert (piped.returncode, piped.stderr) == (0, b"exported 3 entries to standard output\n")
    assert piped.stdout == recorded  # deterministic, whichever way it is written

    # Into a new database, which the import creates.
    fresh = stasis("import", "-", db=tmp_path / "fresh.db", cwd=tmp_path, stdin=recorded)
    assert (fresh.returncode, fresh.stdout) == (0, b"")
    assert fresh.stderr == b"imported 3 entries from standard input\n"
    listed = stasis("ls", "--json", db=tmp_path / "fresh.db", cwd=tmp_path)
    assert len(json.loads(listed.stdout)) == 3

    # Into the database of a running daemon that may not call its upstream: it
    # answers the calls as hits at once, for another API key.
    elsewhere = make_upstream()
    replay = start("--mode", "replay", db=tmp_path / "ci.db", upstream_url=elsewhere.url)
    assert call(replay, CALLS[0], CI_HEADERS)[0] == 504
    imported = stasis("import", "cassettes", db=replay.db, cwd=tmp_path)
    assert (imported.returncode, imported.stderr) == (0, b"imported 3 entries from cassettes\n")
    poll_until(lambda: call(replay, CALLS[0], CI_HEADERS)[1] == "HIT", 3.0)
    for body, answer in zip(CALLS, answers, strict=True):
        assert call(replay, body, CI_HEADERS) == (200, "HIT", answer)
    assert elsewhere.calls() == []


def test_a_bad_cassette_is_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    (tmp_path / "bad.jsonl").write_text('{"stasis": 1}\nnot json at all\n')
    bad = stasis("import", "bad.jsonl", db=db, cwd=tmp_path)
    assert (bad.returncode, bad.stdout) == (1, b"")
    assert re.fullmatch(rb"stasis: bad\.jsonl:\d+: [^\n]+\n", bad.stderr), bad.stderr
    assert not db.exists()  # the database the import would have created is gone again
    missing = stasis("import", "nowhere.jsonl", db=db, cwd=tmp_path)
    assert (missing.returncode, missing.stderr) == (
        1,
        b"stasis: nowhere.jsonl: no such file or directory\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


@pytest_twisted.ensureDeferred
async def test_a_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    store = open_store(str(db), reactor)
    store.open()
    try:
        for n in range(3):
            await store.put(
                Entry(
                    key=f"{n:064x}",
                    status=200,
                    headers=((b"content-type", b"application/json"),),
                    body=b'{"n": %d}' % n,
                    created_at=time.time(),
                    path="/v1/chat/completions",
                    provider="openai",
                    request=StoredRequest(body=chat(str(n))),
                )
            )
    finally:
        await store.close()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "stasis", "export", "-d", str(db), "out.jsonl"],
        cwd=tmp_path,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the process closed its terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        process.wait(timeout=30)
    finally:
        os.close(leader)
    text = shown.decode().replace("\r\n", "\n")
    assert process.returncode == 0
    assert "\rexporting [" + "#" * 30 + "] 3/3 100%" in text
    # Wiped before the last word, which stays alone on its line.
    assert re.search(r"\r {30,}\rexported 3 entries to out\.jsonl\n$", text), text
