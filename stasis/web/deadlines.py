"""
How long a client may take to send a request: ``--header-timeout`` and ``--body-timeout``.

twisted.web has only an idle timeout (``Site.timeOut``, 60 s), which every
byte restarts: a client that sends one byte every ten seconds keeps its
connection, and one of the daemon's file descriptors, for ever. A few hundred
such clients and the daemon has no descriptor left to accept a real one with
(Twisted then accepts and at once closes it: the client sees a reset). A
deadline counts from the start of a request part, whatever arrives meanwhile.

The head (request line and headers; twisted.web refuses more than 16 KB of
it) gets a fixed deadline from its first byte, 15 s by default: a real client
sends it in one write, and mod_reqtimeout's first allowance is 20 s.

The body can be anything up to ``--max-body``, so a fixed deadline would cut
a big upload over a slow link, and nginx's ``client_body_timeout`` (the time
between two reads) never stops a trickle. So, as Apache's mod_reqtimeout
does (``body=20,MinRate=500``), a body has ``--body-timeout`` seconds (60 by
default) plus one second for every :data:`BODY_MIN_RATE` bytes of it that
arrived: a client sending 500 bytes a second or more is never cut (10 MB at
100 KB/s takes 100 s and is allowed 20,060), one byte every ten seconds is
cut after 60 s, and holding a connection costs a client 500 bytes a second.

When a deadline passes, stasis answers ``408`` with its JSON error and
closes the connection (nothing of the request reaches the upstream). nginx
closes without a word (it only logs the 408); HAProxy and Apache send the
408 once some of the request has arrived. Here a deadline starts only when a
request has begun, so the 408 always goes to a client that was sending one:
it learns why, in the form its SDK reads, for one small write. An idle
keep-alive connection, between requests, is left to the idle timeout, and
closed without an answer, as everyone does: a 408 written then could be
read as the answer to the next request the client sends.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from stasis.config import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT

__all__ = ["BODY_MIN_RATE", "Deadline", "Deadlines"]

#: Bytes a second a body must average for its deadline to move with it.
BODY_MIN_RATE = 500


@frozen
class Deadlines:
    """The deadlines a site gives each request's head and body (see the module)."""

    #: Seconds from the first byte of a request to the end of its headers.
    head: float = DEFAULT_HEADER_TIMEOUT
    #: Seconds from the end of the headers to the end of the body, before the allowance
    #: for what arrived.
    body: float = DEFAULT_BODY_TIMEOUT
    body_min_rate: float = BODY_MIN_RATE

    def body_allowance(self, received: int) -> float:
        """Seconds a body of which ``received`` bytes arrived may take in all."""
        return self.body + received / self.body_min_rate


@define
class Deadline:
    """
    One running deadline of one part (``"head"`` or ``"body"``) of a request.

    ``allowance()`` is the part's time in all, asked again when that time
    seems to be up (a body's grows as it arrives): one timer is set per
    deadline, not one per piece received, so a fast request pays for none.
    """

    clock: IReactorTime
    part: str
    allowance: Callable[[], float]
    expired: Callable[[Deadline], None]
    started: float = field(init=False)
    _call: IDelayedCall | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.started = self.clock.seconds()
        self._call = self.clock.callLater(self.allowance(), self._due)

    @property
    def allowed(self) -> float:
        """The part's time in all, as of now."""
        return self.allowance()

    def _due(self) -> None:
        left = self.allowance() - (self.clock.seconds() - self.started)
        if left > 0:
            self._call = self.clock.callLater(left, self._due)
            return
        self._call = None
        self.expired(self)

    def cancel(self) -> None:
        """The part arrived in time, or the connection is gone."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
