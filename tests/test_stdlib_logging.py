"""What :class:`stasis._stdlib_logging.StdlibLogging` hands to :mod:`logging`, and what not."""

from __future__ import annotations

import logging

import pytest
from twisted.logger import Logger
from twisted.python.failure import Failure

from stasis._stdlib_logging import StdlibLogging, stdlib_level_name


def test_stasis_events_keep_their_namespace_level_and_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log = Logger(namespace="stasis.service", observer=StdlibLogging())
    log.info("stasis listening on {where}", where="http://127.0.0.1:1")
    log.debug("a debug line")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("stasis.service", logging.INFO, "stasis listening on http://127.0.0.1:1"),
        ("stasis.service", logging.DEBUG, "a debug line"),
    ]


def test_twisted_errors_come_through_with_their_exception_its_chatter_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log = Logger(namespace="twisted.internet.defer", observer=StdlibLogging())
    log.info("Starting factory")
    try:
        raise KeyError("lost")
    except KeyError:
        log.failure("Unhandled error in Deferred:", Failure())
    [record] = caplog.records
    assert (record.name, record.levelno) == ("stasis", logging.CRITICAL)
    assert record.getMessage() == "Unhandled error in Deferred:"
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)


def test_a_level_the_logger_does_not_want_is_not_formatted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    Logger(namespace="stasis.http", observer=StdlibLogging()).info("{line}", line="POST / 200")
    assert caplog.records == []


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.NOTSET, "debug"),
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "fatal"),
    ],
)
def test_stdlib_levels_name_stasis_levels(level: int, name: str) -> None:
    assert stdlib_level_name(level) == name
