"""
End to end: the log explains what happened, on a real daemon.

Each error stasis makes names its reason in the request's access line (which
504, which 502), a client that gives up leaves a ``499`` line with how long
it waited, ``-l debug`` says where each request goes (the final upstream
URL, so a doubled ``/v1`` would show), ``-l trace`` shows the headers with
credentials masked, and ``--log-format json`` writes the same as one JSON
object a line.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream
from tests.test_e2e_errors import cut_short

CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
#: An access line's time taken and reason, after its status and cache status.
MS = r"\d+\.\dms"


def post_chat(daemon: Daemon, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return daemon.request("POST", "/v1/chat/completions", CHAT.encode(), {**HEADERS, **headers})


def test_a_replay_miss_says_so(daemon: Daemon) -> None:
    status, _, _ = post_chat(daemon, **{"X-Stasis-Mode": "replay"})
    assert status == 504
    daemon.wait_for_log(rf"\] POST /v1/chat/completions 504 MISS {MS} \(replay-miss\)$")


def test_an_upstream_timeout_says_after_how_long(
    start: Callable[..., Daemon], stalled: threading.Event
) -> None:
    daemon = start("--upstream-timeout", "0.5")
    status, _, _ = post_chat(daemon)
    assert status == 504
    line = daemon.wait_for_log(r"POST /v1/chat/completions 504 ")
    assert re.search(rf" 504 MISS {MS} \(upstream-timeout after 0\.5 s\)$", line), line


def test_a_refused_upstream_is_named(start: Callable[..., Daemon], closed_port: int) -> None:
    daemon = start(upstream_url=f"http://127.0.0.1:{closed_port}/base")
    status, _, _ = post_chat(daemon)
    assert status == 502
    line = daemon.wait_for_log(r"POST /v1/chat/completions 502 ")
    assert re.search(
        rf" 502 MISS {MS} \(upstream refused http://127\.0\.0\.1:{closed_port}\)$", line
    ), line


def test_an_upstream_s_password_is_never_logged(
    start: Callable[..., Daemon], closed_port: int
) -> None:
    daemon = start(upstream_url=f"http://proxyuser:Pw9xQz7Lk2@127.0.0.1:{closed_port}/base")
    status, _, body = post_chat(daemon)
    assert status == 502
    line = daemon.wait_for_log(r"POST /v1/chat/completions 502 ")
    assert line.rstrip().endswith(f" http://127.0.0.1:{closed_port})"), line
    assert "Pw9xQz7Lk2" not in daemon.log
    assert b"Pw9xQz7Lk2" not in body


def test_an_upstream_body_that_breaks_off_says_so(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.handler = cut_short
    status, _, _ = post_chat(daemon)
    assert status == 502
    daemon.wait_for_log(rf"POST /v1/chat/completions 502 MISS {MS} \(upstream-body-broken\)$")


def test_a_body_over_the_limit_leaves_a_413_line(start: Callable[..., Daemon]) -> None:
    daemon = start("--max-body", "100")
    status, _, _ = daemon.request("POST", "/v1/chat/completions", b"x" * 200, HEADERS)
    assert status == 413
    daemon.wait_for_log(rf"POST /v1/chat/completions 413 - {MS} \(body-too-large\)$")


def test_a_client_that_gives_up_leaves_a_499_line_with_how_long_it_waited(
    daemon: Daemon, upstream: FakeUpstream, stalled: threading.Event
) -> None:
    host, port = daemon.url.removeprefix("http://").split(":")
    body = CHAT.encode()
    with socket.create_connection((host, int(port))) as client:
        client.sendall(
            b"POST /v1/chat/completions?key=AIzaNotLogged HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        poll_until(lambda: len(upstream.received) == 1)
        waited = time.monotonic()
        # The client waits a while for the held upstream, then gives up.
        poll_until(lambda: time.monotonic() - waited > 0.3)
    line = daemon.wait_for_log(r"POST /v1/chat/completions 499 ")
    match = re.search(r" 499 - (\d+\.\d)ms \(client gone\)$", line)
    assert match, line
    assert float(match.group(1)) >= 300
    assert "AIzaNotLogged" not in daemon.log
    stalled.set()
    assert post_chat(daemon)[0] == 200
    daemon.wait_for_log(r"POST /v1/chat/completions 200 ")
    # One line for the request that was given up on, none more.
    assert len(re.findall(r"POST /v1/chat/completions \d+", daemon.log)) == 2


def test_a_client_that_leaves_mid_stream_leaves_a_499_line(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    upstream.gate = threading.Event()
    host, port = daemon.url.removeprefix("http://").split(":")
    body = json.dumps(
        {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "s"}]}
    ).encode()
    try:
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        upstream.gate.set()
    line = daemon.wait_for_log(r"POST /v1/chat/completions 499 ")
    assert re.search(rf" 499 MISS {MS} \(client gone\)$", line), line


def debug_lines(daemon: Daemon) -> list[str]:
    return [line for line in daemon.lines if "#debug]" in line and " upstream=" in line]


def test_debug_says_where_each_request_goes_with_an_sdk_base_url_not_doubled(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    # The SDKs' own base URLs end in /v1: users pass them as they are.
    daemon = start("-l", "debug", bare=False, routes={"openai": upstream.url + "/v1"})
    for _ in range(2):
        status, headers, _ = daemon.request(
            "POST",
            "/v1/chat/completions?user_tag=QueryNotLogged",
            CHAT.encode(),
            {**HEADERS, "X-Stasis-Namespace": "suite-a"},
        )
        assert status == 200
    # Not /v1/v1/chat/completions, a 404 at every real upstream.
    assert [call.path for call in upstream.calls()] == [
        "/v1/chat/completions?user_tag=QueryNotLogged"
    ]
    key = headers["x-stasis-key"]
    poll_until(lambda: len(debug_lines(daemon)) == 2)
    expected = (
        f"POST /v1/chat/completions upstream={upstream.url}/v1/chat/completions "
        f"model=gpt-4o-mini namespace=suite-a key={key}"
    )
    # The miss and the hit alike (a hit is not served from prepared bytes at debug).
    for line in debug_lines(daemon):
        assert line.rstrip().endswith(expected), line
    assert "QueryNotLogged" not in daemon.log


def test_info_leaves_out_the_debug_lines(daemon: Daemon) -> None:
    assert post_chat(daemon)[0] == 200
    daemon.wait_for_log(r"POST /v1/chat/completions 200 MISS")
    assert debug_lines(daemon) == []


def test_trace_shows_the_headers_with_every_credential_masked(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("-l", "trace", "--credential-header", "X-Gateway-Token")
    secrets = {
        "Authorization": "Bearer sk-proj-Tr4ceS3cretAuth",
        "X-Api-Key": "sk-ant-Tr4ceS3cretXapi",
        "Cookie": "session=Tr4ceS3cretCookie",
        "X-Gateway-Token": "gw-Tr4ceS3cretGateway",
    }
    status, _, _ = daemon.request(
        "POST",
        "/v1/chat/completions?key=AIzaTr4ceS3cretQuery",
        CHAT.encode(),
        {**secrets, "Content-Type": "application/json", "X-Trace-Me": "visible"},
    )
    assert status == 200
    request_line = daemon.wait_for_log(r"POST /v1/chat/completions request headers: ")
    for name in secrets:
        assert f"{name.lower()}: ***" in request_line, request_line
    assert "x-trace-me: visible" in request_line
    daemon.wait_for_log(r"POST /v1/chat/completions response headers: .*x-stasis-status: \w+")
    assert "Tr4ceS3cret" not in daemon.log


def json_lines(daemon: Daemon) -> list[dict[str, Any]]:
    """Every line the daemon wrote, each parsed: all must be JSON."""
    return [json.loads(line) for line in list(daemon.lines) if line.strip()]


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(("stasis", ()), id="stasis-start"),
        pytest.param(("twistd", ("--logger", "stasis.log.observer")), id="twistd"),
    ],
)
def test_json_lines_carry_the_same_facts(
    tmp_path: Path, upstream: FakeUpstream, how: tuple[str, tuple[str, ...]]
) -> None:
    via, twistd_options = how
    daemon = _start_json(tmp_path, upstream, via, twistd_options, "-l", "debug")
    try:
        assert post_chat(daemon)[0] == 200
        assert post_chat(daemon, **{"X-Stasis-Mode": "replay", "X-Stasis-Namespace": "n"})[0] == 504
        poll_until(lambda: sum("(replay-miss)" in line for line in daemon.lines) == 1)
    finally:
        daemon.stop()
    lines = json_lines(daemon)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any("stasis listening on" in line["message"] for line in lines)
    miss, replay = (line for line in lines if "status" in line and line["path"] != "/health")
    assert {k: miss[k] for k in ("method", "path", "status", "cache", "level")} == {
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "cache": "MISS",
        "level": "info",
    }
    assert isinstance(miss["ms"], float) and "reason" not in miss
    assert (replay["status"], replay["reason"]) == (504, "replay-miss")
    assert replay["message"].endswith("(replay-miss)")
    debug = [line for line in lines if line["level"] == "debug" and "upstream" in line]
    assert len(debug) == 2
    assert debug[0]["upstream"] == upstream.url + "/v1/chat/completions"
    assert (debug[0]["model"], debug[0]["namespace"]) == ("gpt-4o-mini", "-")
    assert debug[1]["namespace"] == "n"
    assert re.fullmatch(r"[0-9a-f]{16,}", debug[1]["key"])


def test_json_lines_from_workers_are_written_once_each(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    daemon = _start_json(tmp_path, upstream, "stasis", (), "--workers", "2")
    try:
        assert post_chat(daemon)[0] == 200
        poll_until(lambda: any("POST /v1/chat/completions 200" in line for line in daemon.lines))
    finally:
        daemon.stop()
    lines = json_lines(daemon)
    (access,) = (line for line in lines if "status" in line and line["path"] != "/health")
    assert (access["status"], access["cache"]) == (200, "MISS")


def _start_json(
    tmp_path: Path,
    upstream: FakeUpstream,
    via: str,
    twistd_options: tuple[str, ...],
    *args: str,
) -> Daemon:
    import subprocess

    from tests.daemon import _environment, command

    base = command(via)
    if twistd_options:
        base = [base[0], *twistd_options, *base[1:]]
    process = subprocess.Popen(
        [
            *base,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "-u",
            upstream.url,
            "-d",
            str(tmp_path / "stasis-cache.db"),
            "--log-format",
            "json",
            *args,
        ],
        cwd=tmp_path,
        env=_environment(None, home=tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Daemon(process, tmp_path / "stasis-cache.db").wait_ready()
