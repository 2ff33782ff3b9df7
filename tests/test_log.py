"""
The fast log observer: twistd's classic text, with per-request lines batched.
"""

from __future__ import annotations

import io

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent

from stasis import log as stasis_log
from stasis.log import (
    LINE_FLUSH_SECONDS,
    MAX_HELD_LINES,
    _ClassicTextObserver,
    enabled,
    request_line,
    set_log_level,
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
    request_line(b"POST /v1/chat/completions 200 HIT 0.4ms", 1_700_000_000.0)
    # Another event comes through the observer, after the request's line.
    writer({"log_format": "stasis ready", "log_time": 1_700_000_001.0, "log_namespace": "x"})
    request_line(b"POST /v1/messages 200 MISS 3.1ms", 1_700_000_002.0)
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
    request_line(b"POST /v1/embeddings 200 BYPASS 1.0ms", 1_700_000_000.0)
    (event,) = seen
    assert formatEvent(event) == "POST /v1/embeddings 200 BYPASS 1.0ms"
    assert (event["log_level"], event["log_namespace"]) == (LogLevel.info, "stasis.http")
