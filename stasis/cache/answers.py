"""
What the engine hands back for a request: a stored answer to write back, or a
live one to relay as the upstream sends it; or, failing, an error with what
the cache did on the way.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from twisted.internet.defer import Deferred

from stasis.cache.ports import Client
from stasis.cache_status import CacheOutcome
from stasis.errors import StasisError
from stasis.model import Entry

__all__ = ["About", "Answer", "Failed", "Live", "Stored"]


@frozen
class About:
    """
    What a request was about, as a list of recent requests shows it; an
    :class:`~stasis.model.Entry` says the same of the request it answers.
    """

    provider: str
    model: str | None
    namespace: str


@frozen
class Stored:
    """
    An answer kept in memory or in the store: written back whole, or, for a
    recorded stream asked for in real time, event by event at its recorded pace.
    """

    entry: Entry
    outcome: CacheOutcome
    #: Seconds since it was stored, for ``Age``; None when it is not a hit.
    age: int | None
    realtime: bool = False

    @property
    def key(self) -> str:
        return self.entry.key


@frozen
class Live:
    """
    The upstream's answer as it arrives: its head now, its body through
    :meth:`relay`, which the caller must call once (even if its client left,
    so that the upstream is let go).
    """

    status: int
    phrase: bytes
    headers: list[tuple[bytes, bytes]]
    outcome: CacheOutcome
    key: str | None
    #: Relays the body to a client; fires once the answer is ended.
    relay: Callable[[Client], Deferred[None]]
    about: About | None = None
    #: How long the upstream took to answer with this head.
    upstream_seconds: float | None = None


Answer = Stored | Live


class Failed(Exception):
    """
    The request cannot be answered: ``error`` says why, to the client; what
    the cache did on the way (``outcome``, ``key``) goes in its headers too.
    """

    def __init__(
        self,
        error: StasisError,
        outcome: CacheOutcome,
        key: str | None,
        about: About | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome
        self.key = key
        self.about = about
