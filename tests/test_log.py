"""
The fast log observer: twistd's classic text, with per-request lines batched.
"""

from __future__ import annotations

import io

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher

from stasis.log import LINE_FLUSH_SECONDS, _ClassicTextObserver


class CountingFlushes(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def test_request_lines_are_written_in_twistds_format_and_flushed_together() -> None:
    out, clock = CountingFlushes(), Clock()
    log = Logger(namespace="stasis.http", observer=LogPublisher(_ClassicTextObserver(out, clock)))
    for n in range(3):
        log.info("{line}", line=f"POST /v1/chat/completions 200 HIT {n}.0ms")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(" [stasis.http#info] POST /v1/chat/completions 200 HIT 0.0ms")
    assert out.flushes == 0
    clock.advance(LINE_FLUSH_SECONDS)
    assert out.flushes == 1


def test_other_events_are_formatted_by_twisted_and_flushed_at_once() -> None:
    out, clock = CountingFlushes(), Clock()
    observer = _ClassicTextObserver(out, clock)
    log = Logger(namespace="stasis.store", observer=LogPublisher(observer))
    log.info("{line}", line="GET /health 200 - 0.3ms")
    log.warn("cannot write {path}", path="/tmp/x.db")
    assert "[stasis.store#warn] cannot write /tmp/x.db" in out.getvalue()
    assert out.flushes == 1
    clock.advance(LINE_FLUSH_SECONDS)
    assert out.flushes == 1  # the pending flush was the one already done
    observer({"log_format": "{x}", "x": 1, "log_level": LogLevel.info, "log_time": None})
    assert out.getvalue().endswith("- [-#info] 1\n")
