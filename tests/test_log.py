"""
The fast log observer: twistd's classic text, with per-request lines batched.
"""

from __future__ import annotations

import io
import json

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent

from stasis import log as stasis_log
from stasis.log import (
    LINE_FLUSH_SECONDS,
    MAX_HELD_LINES,
    _ClassicTextObserver,
    _JSONObserver,
    debugging,
    enabled,
    masked_headers,
    request_line,
    set_log_level,
    tracing,
    url_for_log,
)


class CountingWrites(io.StringIO):
    """A stream that counts writes and flushes, as an unbuffered stdout would see them."""

    flushes = 0
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


def test_request_lines_are_written_in_twistds_format_together() -> None:
    out, clock = CountingWrites(), Clock()
    log = Logger(namespace="stasis.http", observer=LogPublisher(_ClassicTextObserver(out, clock)))
    for n in range(3):
        log.info("{line}", line=f"POST /v1/chat/completions 200 HIT {n}.0ms")
    assert out.getvalue() == ""  # held for the lines after them
    clock.advance(LINE_FLUSH_SECONDS)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(" [stasis.http#info] POST /v1/chat/completions 200 HIT 0.0ms")
    assert lines[2].endswith(" HIT 2.0ms")
    assert (out.writes, out.flushes) == (1, 1)


def test_a_full_batch_of_request_lines_is_written_without_waiting() -> None:
    out, clock = CountingWrites(), Clock()
    observer = _ClassicTextObserver(out, clock)
    log = Logger(namespace="stasis.http", observer=LogPublisher(observer))
    for n in range(MAX_HELD_LINES + 1):
        log.info("{line}", line=f"POST /v1/embeddings 200 MISS {n}.0ms")
    assert len(out.getvalue().splitlines()) == MAX_HELD_LINES
    assert out.writes == 1
    clock.advance(LINE_FLUSH_SECONDS)
    assert len(out.getvalue().splitlines()) == MAX_HELD_LINES + 1


def test_other_events_are_formatted_by_twisted_and_written_at_once_in_order() -> None:
    out, clock = CountingWrites(), Clock()
    observer = _ClassicTextObserver(out, clock)
    log = Logger(namespace="stasis.store", observer=LogPublisher(observer))
    log.info("{line}", line="GET /health 200 - 0.3ms")
    log.warn("cannot write {path}", path="/tmp/x.db")
    first, second = out.getvalue().splitlines()
    assert first.endswith("GET /health 200 - 0.3ms")
    assert second.endswith("[stasis.store#warn] cannot write /tmp/x.db")
    assert out.flushes == 1
    clock.advance(LINE_FLUSH_SECONDS)
    assert out.flushes == 1  # the pending flush was the one already done
    observer({"log_format": "{x}", "x": 1, "log_level": LogLevel.info, "log_time": None})
    assert out.getvalue().endswith("- [-#info] 1\n")


def test_enabled_follows_the_log_level_as_it_changes() -> None:
    try:
        set_log_level("warn")
        assert not enabled("stasis.http", LogLevel.info)
        assert enabled("stasis.http", LogLevel.error)
        set_log_level("debug")
        assert enabled("stasis.http", LogLevel.info)
        assert enabled("stasis.proxy", LogLevel.debug)
    finally:
        set_log_level("info")
    assert not enabled("stasis.proxy", LogLevel.debug)


def test_request_lines_go_straight_to_stasis_s_writer_in_order_with_other_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, clock = CountingWrites(), Clock()
    writer = _ClassicTextObserver(out, clock)
    monkeypatch.setattr(stasis_log, "_direct", writer)
    seen: list[object] = []
    publisher = LogPublisher(seen.append)
    monkeypatch.setattr(stasis_log, "globalLogPublisher", publisher)
    request_line((1_700_000_000.0, b"POST", b"/v1/chat/completions", 200, b"HIT", 0.4, b""))
    # Another event comes through the observer, after the request's line.
    writer({"log_format": "stasis ready", "log_time": 1_700_000_001.0, "log_namespace": "x"})
    request_line((1_700_000_002.0, b"POST", b"/v1/messages", 200, b"MISS", 3.1, b""))
    clock.advance(LINE_FLUSH_SECONDS)
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "POST /v1/chat/completions 200 HIT 0.4ms",
        "stasis ready",
        "POST /v1/messages 200 MISS 3.1ms",
    ]
    assert lines[0].split(" [", 1)[1].startswith("stasis.http#info]")
    assert seen == []  # never an event: the writer took them


def test_without_stasis_s_writer_request_lines_are_ordinary_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stasis_log, "_direct", None)
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(stasis_log, "globalLogPublisher", LogPublisher(seen.append))
    request_line((1_700_000_000.0, b"POST", b"/v1/embeddings", 502, b"BYPASS", 1.04, b"why"))
    (event,) = seen
    assert formatEvent(event) == "POST /v1/embeddings 502 BYPASS 1.0ms (why)"
    assert (event["log_level"], event["log_namespace"]) == (LogLevel.info, "stasis.http")
    # Observers other than stasis's own get the line's facts too.
    assert {name: event[name] for name in ("method", "path", "status", "cache", "ms")} == {
        "method": "POST",
        "path": "/v1/embeddings",
        "status": 502,
        "cache": "BYPASS",
        "ms": 1.0,
    }
    assert event["reason"] == "why"


def test_json_lines_carry_the_access_line_s_facts_and_other_events_fields() -> None:
    out, clock = CountingWrites(), Clock()
    writer = _JSONObserver(out, clock)
    writer.hold_request(
        (1_700_000_000.25, b"POST", b"/v1/chat/completions", 504, b"MISS", 2.0, b"replay-miss")
    )
    log = Logger(namespace="stasis.cache", observer=LogPublisher(writer))
    log.debug("{method} went to {upstream}", method="POST", upstream="http://h/v1/x")
    access, debug = (json.loads(line) for line in out.getvalue().splitlines())
    assert access == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "logger": "stasis.http",
        "message": "POST /v1/chat/completions 504 MISS 2.0ms (replay-miss)",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 504,
        "cache": "MISS",
        "ms": 2.0,
        "reason": "replay-miss",
    }
    assert debug["level"] == "debug"
    assert debug["logger"] == "stasis.cache"
    assert debug["message"] == "POST went to http://h/v1/x"
    assert debug["upstream"] == "http://h/v1/x"


def test_a_failure_is_one_json_line_with_its_traceback() -> None:
    out, clock = CountingWrites(), Clock()
    log = Logger(namespace="stasis.proxy", observer=LogPublisher(_JSONObserver(out, clock)))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.failure("proxying {path} failed", path="/v1/x")
    (line,) = out.getvalue().splitlines()
    document = json.loads(line)
    assert document["level"] == "critical"
    assert document["message"] == "proxying /v1/x failed"
    assert "RuntimeError: boom" in document["traceback"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pa55word@gw.example:8443/v1/chat?key=AIzaSECRET#frag",
            "https://gw.example:8443/v1/chat",
        ),
        ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
        ("http://[::1]:9/x?api-version=1", "http://[::1]:9/x"),
    ],
)
def test_a_url_is_logged_without_its_query_or_userinfo(url: str, shown: str) -> None:
    assert url_for_log(url) == shown


def test_credential_headers_are_masked_whole_and_others_shown() -> None:
    headers = [
        (
            b"Authorization",
            [b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2024/us-east-1, Signature=abc"],
        ),
        (b"X-Api-Key", [b"sk-ant-secret"]),
        (b"Cookie", [b"a=b"]),
        (b"Set-Cookie", [b"c=d"]),
        (b"X-Amz-Security-Token", [b"FwoGZ"]),
        (b"X-Gateway-Token", [b"gw-secret"]),
        (b"Content-Type", [b"application/json"]),
    ]
    text = masked_headers(headers, also=("X-Gateway-Token",))
    assert text == (
        "authorization: ***; x-api-key: ***; cookie: ***; set-cookie: ***; "
        "x-amz-security-token: ***; x-gateway-token: ***; content-type: application/json"
    )


def test_every_credential_and_account_header_stasis_knows_is_masked() -> None:
    from stasis.keys import CREDENTIAL_HEADERS, DEFAULT_POLICY

    names = [*CREDENTIAL_HEADERS, *DEFAULT_POLICY.account_headers]
    text = masked_headers([(name.encode(), [b"s3cret-value"]) for name in names])
    assert "s3cret" not in text
    assert "openai-organization: ***" in text


def test_trace_is_told_apart_from_debug() -> None:
    try:
        set_log_level("debug")
        assert (debugging(), tracing()) == (True, False)
        set_log_level("trace")
        assert (debugging(), tracing()) == (True, True)
        assert enabled("stasis.cache", LogLevel.debug)
    finally:
        set_log_level("info")
    assert (debugging(), tracing()) == (False, False)
