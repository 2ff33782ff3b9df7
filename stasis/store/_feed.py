"""
A store's change feed: who wants to hear of committed changes, and telling them.

The in-memory layers in front of a store subscribe here and forget exactly
the keys a change names, so that another process's delete is honoured per key
instead of emptying every layer whenever anything at all is written.
"""

from __future__ import annotations

from collections.abc import Callable

from stasis.model import Change

__all__ = ["ChangeFeed", "Subscriber"]

Subscriber = Callable[[Change], object]


class ChangeFeed:
    """Subscribers called in order of subscription, synchronously, once per change."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every change from now on; the result unsubscribes."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, change: Change) -> None:
        """
        Tell every subscriber, in order. A subscriber that raises is a bug in
        it, not in the change: the others are told all the same.
        """
        for subscriber in list(self._subscribers):
            try:
                subscriber(change)
            except Exception:
                from stasis.log import logger

                logger("stasis.store").failure("a change feed subscriber failed")
