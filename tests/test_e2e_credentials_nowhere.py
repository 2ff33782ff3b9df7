"""
No credential is written anywhere: a real daemon at ``-l trace`` (its log as
text, and as JSON lines) is sent every
kind of credential stasis knows (each header, ``key=``, a ``--credential-header``,
account headers, a SigV4 signature and the daemon's own AWS secret) on misses,
hits, streams, replay misses and upstream errors, through the official SDKs
and raw HTTP; then no 8-character piece of any of them appears in the
database, its WAL, the daemon's log, ``/stats``, ``/health``, ``/metrics``,
the admin API that the web UI shows (every entry, the recent requests), an
export (JSON Lines and folder), or what ``ls``, ``show`` and ``stats`` print.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config as BotocoreConfig

from tests.daemon import Daemon
from tests.fake_upstream import AWS_ACCESS_KEY, AWS_SECRET_KEY, FakeUpstream, Reply
from tests.test_manage import stasis

#: Each distinct, and none a piece of another or of anything an answer holds.
SECRETS = {
    "authorization": "sk-proj-Q7vLk2MxW9pRt4NzB8cYhJ3f",
    "organization": "org-Vd6TqP2sKm8WxZ4rLb1N",
    "project": "proj_Hc3YwR7tQe9UaK5mSp2G",
    "x-api-key": "sk-ant-api03-Lm4Xq8TzVb2NcW6rJk9P",
    "api-key": "azk-Fy7RwD3qHs5TmL8vXc2B",
    "x-goog-api-key": "AIzaSyQ4nM8kT2rW6vZ9xB3cL7pJ",
    "key-query": "AIzaSyGh5Tk9Wm2Qr7Xv4Zc8Nb1D",
    "proxy-authorization": "pxy-Jr6Wq2Tm9Kz4Vc8Xb3Ns",
    "cookie": "sess-Pw8Lq3Zt6Mv1Rx9Kc4Bh",
    "custom": "cst-Tb7Yq2Nw5Kr9Xm3Vz6Lp",
    "aws-secret": AWS_SECRET_KEY,
    "aws-session": "FwoGZXIvYXdzE-Sess-Kq8Tz3Vm6Wr2Xb9N",
}
REGION = "us-east-1"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def pieces(secret: str, width: int = 8) -> set[str]:
    return {secret[i : i + width] for i in range(len(secret) - width + 1)}


def leaks(name: str, blob: bytes) -> list[str]:
    """Which secrets have an 8-character piece in ``blob`` (named by where they came from)."""
    text = blob.decode("utf-8", "replace")
    return [
        f"{which} in {name}"
        for which, secret in SECRETS.items()
        if any(piece in text for piece in pieces(secret))
    ]


def every_file(folder: Path) -> Iterable[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def traffic(daemon: Daemon, upstream: FakeUpstream) -> None:
    """Every credential, on misses, hits, streams, errors and replay misses."""
    oai = openai.OpenAI(
        base_url=daemon.url + "/v1",
        api_key=SECRETS["authorization"],
        organization=SECRETS["organization"],
        project=SECRETS["project"],
        max_retries=0,
    )
    for _ in range(2):
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
        )
        list(
            oai.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True
            )
        )
    with pytest.raises(openai.APIStatusError):
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "never recorded"}],
            extra_headers={"X-Stasis-Mode": "replay"},
        )

    claude = anthropic.Anthropic(base_url=daemon.url, api_key=SECRETS["x-api-key"], max_retries=0)
    for _ in range(2):
        claude.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=32,
            messages=[{"role": "user", "content": "a"}],
        )
        with claude.messages.stream(
            model="claude-3-5-haiku-latest",
            max_tokens=32,
            messages=[{"role": "user", "content": "s"}],
        ) as stream:
            stream.get_final_text()

    bedrock = boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=daemon.url,
        aws_access_key_id=AWS_ACCESS_KEY,
        aws_secret_access_key=AWS_SECRET_KEY,
        aws_session_token=SECRETS["aws-session"],
        config=BotocoreConfig(retries={"total_max_attempts": 1}),
    )
    for _ in range(2):
        bedrock.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "a"}]}])

    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "raw"}]}).encode()
    gemini = json.dumps({"contents": [{"parts": [{"text": "a"}]}]}).encode()
    raw: list[tuple[str, bytes, dict[str, str]]] = [
        (
            "/openai/deployments/gpt/chat/completions?api-version=2024-10-21",
            chat,
            {"api-key": SECRETS["api-key"]},
        ),
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            gemini,
            {"x-goog-api-key": SECRETS["x-goog-api-key"]},
        ),
        (
            f"/v1beta/models/gemini-2.0-flash:generateContent?key={SECRETS['key-query']}",
            gemini,
            {},
        ),
        (
            "/v1/chat/completions",
            chat,
            {
                "Proxy-Authorization": f"Basic {SECRETS['proxy-authorization']}",
                "Cookie": f"session={SECRETS['cookie']}",
                "X-Custom-Token": SECRETS["custom"],
            },
        ),
    ]
    for path, body, headers in raw:
        for _ in range(2):
            status, _, _ = daemon.request(
                "POST", path, body, {"Content-Type": "application/json", **headers}
            )
            assert status == 200, path
    # Replay misses name the nearest request: never with its credentials.
    for path, body, headers in raw:
        status, _, answer = daemon.request(
            "POST",
            path,
            body.replace(b"a", b"b"),
            {"Content-Type": "application/json", "X-Stasis-Mode": "replay", **headers},
        )
        assert status == 504, answer
    # An upstream error, and the upstream gone: both logged.
    upstream.handler = lambda request: Reply(401, [("Content-Type", "application/json")], b"{}")
    status, _, _ = daemon.request(
        "POST",
        f"/v1beta/models/gemini-2.0-flash:generateContent?key={SECRETS['key-query']}",
        gemini.replace(b"a", b"c"),
        {"Content-Type": "application/json"},
    )
    assert status == 401


def admin_leaks(daemon: Daemon) -> list[str]:
    """
    What the web UI and /metrics could show: every admin API answer (every
    entry listed and opened, the recent requests with their replay-miss
    diagnostics, the figures), the UI's own files, and the metrics.
    """
    found: list[str] = []
    answers: dict[str, bytes] = {}
    for path in (
        "/metrics",
        "/_stasis/",
        "/_stasis/app.js",
        "/_stasis/api/stats",
        "/_stasis/api/series?minutes=1440",
        "/_stasis/api/recent",
    ):
        status, _, body = daemon.request("GET", path)
        assert status == 200, path
        answers[path] = body
    recent = json.loads(answers["/_stasis/api/recent"])["requests"]
    assert any(r["detail"] == "replay-miss" and r["error"] for r in recent)
    cursor: str | None = None
    opened = 0
    while True:
        path = "/_stasis/api/entries?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = daemon.request("GET", path)
        assert status == 200, body
        answers[path] = body
        page = json.loads(body)
        for entry in page["entries"]:
            status, _, detail = daemon.request("GET", "/_stasis/api/entries/" + entry["key"])
            assert status == 200, detail
            answers[entry["key"]] = detail
            opened += 1
        cursor = page["cursor"]
        if cursor is None:
            break
    assert opened >= 8
    for where, body in answers.items():
        found += leaks(where, body)
    return found


@pytest.mark.parametrize(("level", "log_format"), [("trace", "text"), ("trace", "json")])
def test_no_piece_of_any_credential_is_written_anywhere(
    start: Callable[..., Daemon],
    upstream: FakeUpstream,
    tmp_path: Path,
    level: str,
    log_format: str,
) -> None:
    daemon = start(
        "-l",
        level,
        "--log-format",
        log_format,
        "--credential-header",
        "X-Custom-Token",
        # twistd's own observer writes only text: stasis start uses stasis's.
        via="stasis" if log_format == "json" else "twistd",
        env={"AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET_KEY},
    )
    traffic(daemon, upstream)
    assert len(upstream.calls()) >= 10

    found: list[str] = []
    for path in ("/stats", "/health"):
        found += leaks(path, json.dumps(daemon.get_json(path)).encode())
    found += admin_leaks(daemon)
    # The database and its WAL while the daemon runs, and after it stopped.
    for path in every_file(daemon.db.parent):
        if path.name.startswith(daemon.db.name):
            found += leaks(f"{path.name} (running)", path.read_bytes())
    daemon.stop()
    found += leaks("log", daemon.log.encode())
    # The log holds what trace adds (the headers, masked), in the format asked for.
    assert "request headers: " in daemon.log and "authorization: ***" in daemon.log
    if log_format == "json":
        assert all(json.loads(line) for line in daemon.lines if line.strip())
    for path in every_file(daemon.db.parent):
        if path.name.startswith(daemon.db.name):
            found += leaks(path.name, path.read_bytes())
    with sqlite3.connect(daemon.db) as db:
        entries = db.execute("SELECT count(*) FROM entries").fetchone()[0]
        keys = [row[0].hex() for row in db.execute("SELECT key FROM entries")]
    assert entries >= 8

    export = stasis("export", "cassettes", db=daemon.db, cwd=tmp_path)
    lines = stasis("export", "all.jsonl", db=daemon.db, cwd=tmp_path)
    assert (export.returncode, lines.returncode) == (0, 0), export.stderr + lines.stderr
    for path in [*every_file(tmp_path / "cassettes"), tmp_path / "all.jsonl"]:
        found += leaks(str(path.relative_to(tmp_path)), path.read_bytes())
    printed = [
        stasis("ls", "--json", db=daemon.db, cwd=tmp_path),
        stasis("ls", db=daemon.db, cwd=tmp_path),
        stasis("stats", db=daemon.db, cwd=tmp_path),
        *(stasis("show", key, db=daemon.db, cwd=tmp_path) for key in keys),
        *(stasis("show", "--json", key, db=daemon.db, cwd=tmp_path) for key in keys),
    ]
    for result in printed:
        assert result.returncode == 0, result.stderr
        found += leaks(
            " ".join(map(str, result.args[2:4])), (result.stdout + result.stderr).encode()
        )
    assert found == []
    # The check itself finds what it looks for.
    assert leaks("probe", f"x{SECRETS['cookie'][3:11]}y".encode()) == ["cookie in probe"]
