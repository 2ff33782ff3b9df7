"""
:class:`stasis._reactor_thread.ReactorThread` on a reactor of its own (not the
global one, which pytest-twisted runs): a caller waiting on it is never left
waiting for ever.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.selectreactor import SelectReactor

from stasis._reactor_thread import ReactorThread, ReactorThreadGone


@pytest.fixture
def thread() -> Iterator[ReactorThread]:
    running = ReactorThread(SelectReactor())  # type: ignore[no-untyped-call]
    running.start()
    try:
        yield running
    finally:
        running.stop(10)
    assert not running.alive


def test_a_call_returns_its_result_and_raises_its_error_in_the_caller(
    thread: ReactorThread,
) -> None:
    assert thread.call(lambda: 7, 10) == 7

    def fail() -> None:
        raise KeyError("raised in the reactor thread")

    with pytest.raises(KeyError, match="raised in the reactor thread"):
        thread.call(fail, 10)


def test_a_call_whose_deferred_never_fires_times_out(thread: ReactorThread) -> None:
    with pytest.raises(TimeoutError, match=r"did not answer in 0\.2s"):
        thread.call(Deferred, 0.2)
    assert thread.call(lambda: "still serving", 10) == "still serving"


def test_a_call_after_the_reactor_was_stopped_elsewhere_says_so(thread: ReactorThread) -> None:
    thread.reactor.callFromThread(thread.reactor.stop)
    thread.join(10)  # until run() returned: a call made earlier may still be answered
    assert not thread.alive
    with pytest.raises(ReactorThreadGone, match="stopped from elsewhere"):
        thread.call(lambda: 7, 10)
