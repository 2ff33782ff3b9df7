"""Waiting for the reactor to get somewhere, with a deadline instead of a sleep."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.task import deferLater


async def wait_for(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    """Let the reactor run until ``condition()`` holds; fail at the deadline."""
    waited = 0.0
    while not condition():
        if waited > deadline:
            raise AssertionError(f"condition not met within {deadline}s")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
