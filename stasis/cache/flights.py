"""
Single flight: identical misses that arrive while one is being fetched wait
for it, instead of each paying for a call.

The first request for a key leads; the others follow, and each follower gets
what the leader got: its answer (stored, or only recorded when it could not
be stored, such as a 429), or its error (the upstream refused, timed out).
Only when the leader got nothing a follower can be given (its client left
before the answer was whole, the body broke off, or it was too large to keep
in memory) does one follower take over and fetch, alone, while the others
wait for it in turn: never a stampede of followers at the upstream at once.

A flight lasts until the leader's entry is committed, so that the request
after it finds the entry; but an answer whose commit is slow to come (a lock
another process holds) is handed on at once (:meth:`Flights.hand_on`), to
the followers and to whoever follows until it ends, rather than held back
with it.
"""

from __future__ import annotations

from typing import Optional

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed

from stasis.errors import StasisError
from stasis.model import Entry

__all__ = ["NOTHING", "Flight", "Flights", "Landed"]


@frozen
class Landed:
    """What a follower gets: an answer, an error, or a flight of its own to lead."""

    entry: Entry | None = None
    #: Whether ``entry`` is in the store (False: an answer that was not stored).
    stored: bool = False
    #: Whether ``entry`` was found in the cache rather than fetched: then a
    #: follower's answer is a plain hit (the flight began with the lookup).
    found: bool = False
    error: StasisError | None = None
    #: For the one follower that must fetch after all: the flight it now leads.
    lead: Optional[Flight] = None  # noqa: UP045 - a forward reference attrs resolves late


#: A flight that ended with nothing to hand on.
NOTHING = Landed()


@define(eq=False)
class Flight:
    """One key's fetch in progress, and who waits for it."""

    key: str
    followers: list[Deferred[Landed]] = field(factory=list, init=False)
    #: What the flight handed on before it ended (see Flights.hand_on).
    handed_on: Landed | None = field(default=None, init=False)

    def follow(self) -> Deferred[Landed]:
        """Fires with what the flight landed; cancel it to stop waiting."""
        if self.handed_on is not None:
            return succeed(self.handed_on)

        def cancel(waiter: Deferred[Landed]) -> None:
            if waiter in self.followers:
                self.followers.remove(waiter)

        waiter: Deferred[Landed] = Deferred(cancel)
        self.followers.append(waiter)
        return waiter


@define
class Flights:
    """The flights under way, by key."""

    _flights: dict[str, Flight] = field(factory=dict, init=False)

    def __contains__(self, key: str) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    def follow(self, key: str) -> Deferred[Landed] | None:
        """Wait for the flight of ``key``; None if there is none."""
        flight = self._flights.get(key)
        return None if flight is None else flight.follow()

    def lead(self, key: str) -> Flight | None:
        """Start the flight of ``key``; None if one is already under way."""
        if key in self._flights:
            return None
        flight = self._flights[key] = Flight(key)
        return flight

    def hand_on(self, flight: Flight, landed: Landed) -> None:
        """
        Give ``landed`` (an answer, its commit still to come) to the followers
        now, and to whoever follows the flight from now until it ends.
        """
        flight.handed_on = landed
        followers, flight.followers = flight.followers, []
        for waiter in followers:
            waiter.callback(landed)

    def end(self, flight: Flight, landed: Landed) -> None:
        """
        Hand ``landed`` to the followers; with nothing to hand on, the first
        follower leads a new flight for the key, and the others follow that.
        """
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        followers, flight.followers = flight.followers, []
        if landed.entry is None and landed.error is None and followers:
            successor = self._flights[flight.key] = Flight(flight.key)
            successor.followers = followers[1:]
            followers[0].callback(Landed(lead=successor))
            return
        for waiter in followers:
            waiter.callback(landed)
