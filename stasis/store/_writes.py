"""
Writes applied one transaction at a time, in the order they were asked for, puts grouped.

A store has one writer connection, so its writes go one after another anyway;
doing them strictly in the order asked for is what keeps a delete from being
undone by a put asked for before it that was still waiting. Puts asked for
while a transaction is under way wait together and are committed in one
transaction (group commit): under load a commit costs a batch of entries what
it would cost one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from stasis.model import Entry

__all__ = ["Write", "WriteQueue"]


@define
class Write:
    """One write transaction, waiting its turn or under way."""

    #: Runs on the writer thread before the transaction begins (compressing
    #: entries there keeps it off the reactor and outside the write lock).
    prepare: Callable[[], Any]
    #: Runs on the writer thread inside the transaction: (cursor, prepared) -> result.
    statements: Callable[[Any, Any], Any]
    #: On the reactor thread once committed: publish the change, tell the caller.
    settle: Callable[[Any], None]
    #: On the reactor thread if the transaction failed.
    fail: Callable[[Failure], None]
    #: A batch of puts, which takes more puts until it begins; None for any other write.
    puts: list[tuple[Entry, Deferred[None]]] | None = None
    #: False for work on the writer's connection that must run outside a
    #: transaction, between two (a checkpoint): its statements get a cursor
    #: with no transaction begun, nothing committed, no change recorded.
    transaction: bool = True
    #: Told once this write is settled, after its callers.
    settled: list[Deferred[None]] = field(factory=list)
    #: For a batch of puts: the same puts as one write each, tried in its
    #: place when it fails (see WriteQueue._finished).
    split: Callable[[], list[Write]] | None = None


@define
class WriteQueue:
    """Writes waiting their turn; ``run`` starts one transaction and fires with its outcome."""

    #: Runs a write's transaction; fires with its result, or fails.
    run: Callable[[Write], Deferred[Any]]
    #: Told of every outcome (a result or a Failure) before the write's callers
    #: are; what it returns is what they are told.
    noted: Callable[[object], object]
    _waiting: deque[Write] = field(factory=deque, init=False)
    _running: Write | None = field(default=None, init=False)

    def add(self, write: Write) -> None:
        """Queue ``write`` after every write asked for so far."""
        self._waiting.append(write)
        self._begin_next()

    def open_batch(self) -> list[tuple[Entry, Deferred[None]]] | None:
        """The puts of the last write asked for, if it is a batch of puts not yet begun."""
        return self._waiting[-1].puts if self._waiting else None

    def settled(self) -> Deferred[None]:
        """Fires once every write asked for so far is committed or has failed."""
        last = self._waiting[-1] if self._waiting else self._running
        if last is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        last.settled.append(done)  # writes settle in order: the last settles last
        return done

    def _begin_next(self) -> None:
        # Also called from callbacks of the write that just settled (a caller
        # putting again at once): whichever call comes first begins the next.
        if self._running is not None or not self._waiting:
            return
        write = self._running = self._waiting.popleft()
        self.run(write).addBoth(self._finished, write)

    def _finished(self, outcome: object, write: Write) -> None:
        self._running = None
        if isinstance(outcome, Failure) and write.split is not None and len(write.puts or ()) > 1:
            # One entry the database refuses (a value it cannot encode) must
            # not take the others committed with it down too: each is tried
            # alone, in the batch's place in the order, and only what fails
            # then is failed (and counts against the store).
            singles = write.split()
            singles[-1].settled.extend(write.settled)
            self._waiting.extendleft(reversed(singles))
            self._begin_next()
            return
        try:
            outcome = self.noted(outcome)
            if isinstance(outcome, Failure):
                write.fail(outcome)
            else:
                write.settle(outcome)
        finally:
            # Whatever became of this one, the writes after it must go on.
            for done in write.settled:
                done.callback(None)
            self._begin_next()
