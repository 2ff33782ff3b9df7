"""
The fast log observer: twistd's classic text, with per-request lines batched.
"""

from __future__ import annotations

import io

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher

from stasis.log import (
    LINE_FLUSH_SECONDS,
    MAX_HELD_LINES,
    _ClassicTextObserver,
    enabled,
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
