"""
Writes applied one transaction at a time, in the order they were asked for, puts grouped.

A store has one writer connection, so its writes go one after another anyway;
doing them strictly in the order asked for is what keeps a delete from being
undone by a put asked for before it that was still waiting. Puts asked for
while a transaction is under way wait together and are committed in one
transaction (group commit): under load a commit costs a batch of entries what
it would cost one.

A write that finds the database locked by another process (SQLite's
"database is locked" once its busy timeout has run out, PostgreSQL's lock
timeout) is not a failure: the lock is someone else's transaction, a backup,
a ``VACUUM``, and it will be let go. The write stays first in line and is
tried again, after a pause that grows from :data:`LOCK_RETRY_FIRST_SECONDS`
to :data:`LOCK_RETRY_MAX_SECONDS` (counted from the start of the try, so a
try that waited out a busy timeout is followed at once by the next), while
the writes asked for meanwhile wait behind it, puts still gathering into one
batch. Only a lock held longer than the queue's patience
(:data:`LOCK_PATIENCE_SECONDS`) fails the write, and with it every write
waiting: they would each wait as long again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from stasis.model import Entry

__all__ = [
    "LOCK_PATIENCE_SECONDS",
    "LOCK_RETRY_FIRST_SECONDS",
    "LOCK_RETRY_MAX_SECONDS",
    "Write",
    "WriteQueue",
]

#: How long a lock held by another process is waited out before the writes
#: waiting for it fail (and the store reports itself unwritable, bypassing
#: misses until a probe finds it takes writes again). A minute: longer than
#: any transaction a person or a tool holds on purpose for a moment (an
#: import, a hand-made ``BEGIN IMMEDIATE``, a ``VACUUM`` of a cache of a few
#: gigabytes), short enough that a lock left held for good (a stopped
#: process, a forgotten shell) costs a bounded queue of entries a minute.
LOCK_PATIENCE_SECONDS = 60.0
#: The pause before the first retry of a write that found the database locked,
#: doubled for each try after it, up to :data:`LOCK_RETRY_MAX_SECONDS`.
LOCK_RETRY_FIRST_SECONDS = 0.05
LOCK_RETRY_MAX_SECONDS = 1.0


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
    #: False for a write that is worth nothing late (a claim, taken before a
    #: fetch): when the database is found locked it fails at once, with the
    #: driver's error (the store is not told: it is no fault of the
    #: database), and so do the impatient writes waiting, instead of waiting
    #: out the lock.
    patient: bool = True
    #: Tried at least once: a batch of puts then takes no more (a batch
    #: waiting out a lock would otherwise be packed again, all of it, at
    #: every try; the puts asked for meanwhile make the next batch).
    begun: bool = field(default=False, init=False)


def _never(_: Failure) -> bool:
    return False


@define
class WriteQueue:
    """Writes waiting their turn; ``run`` starts one transaction and fires with its outcome."""

    #: Runs a write's transaction; fires with its result, or fails.
    run: Callable[[Write], Deferred[Any]]
    #: Told of every outcome (a result or a Failure) before the write's callers
    #: are; what it returns is what they are told.
    noted: Callable[[object], object]
    #: Times the retries of a write that found the database locked.
    clock: IReactorTime
    #: Whether a failure is the database locked by another process (waited out).
    locked: Callable[[Failure], bool] = _never
    #: Told when a write first finds the database locked (how many writes
    #: wait, this one included), and then once the lock is let go (True) or
    #: given up on (False), with how long it was waited for.
    on_lock: Callable[[int], None] = lambda _: None
    on_unlock: Callable[[float, bool], None] = lambda _seconds, _let_go: None
    #: How long a lock is waited out (see :data:`LOCK_PATIENCE_SECONDS`);
    #: 0 once the store is closing: a lock then fails what waits at once.
    patience: float = LOCK_PATIENCE_SECONDS
    _waiting: deque[Write] = field(factory=deque, init=False)
    _running: Write | None = field(default=None, init=False)
    #: When the try that first found the database locked began (None: not locked).
    _locked_since: float | None = field(default=None, init=False)
    #: Tries of the write under way that found the database locked, and its next one.
    _tries: int = field(default=0, init=False)
    _retry: IDelayedCall | None = field(default=None, init=False)
    _began_at: float = field(default=0.0, init=False)
    #: While paused, no write begins (the one under way ends as it would).
    _paused: bool = field(default=False, init=False)
    #: Told once no write is under way (see :meth:`idle`).
    _idle: list[Deferred[None]] = field(factory=list, init=False)

    @property
    def held_up(self) -> bool:
        """
        True while the writes wait for a lock another process holds: a commit
        asked for now comes only once it is let go (or given up on).
        """
        return self._locked_since is not None

    @property
    def waiting(self) -> int:
        """How many writes wait their turn (a batch of puts counts once)."""
        return len(self._waiting)

    def add(self, write: Write) -> None:
        """Queue ``write`` after every write asked for so far."""
        self._waiting.append(write)
        self._begin_next()

    def open_batch(self) -> list[tuple[Entry, Deferred[None]]] | None:
        """The puts of the last write asked for, if it is a batch of puts not yet begun."""
        if not self._waiting or self._waiting[-1].begun:
            return None
        return self._waiting[-1].puts

    def settled(self) -> Deferred[None]:
        """Fires once every write asked for so far is committed or has failed."""
        last = self._waiting[-1] if self._waiting else self._running
        if last is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        last.settled.append(done)  # writes settle in order: the last settles last
        return done

    def pause(self) -> None:
        """Begin no more writes until :meth:`resume` (the one under way goes on)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._begin_next()

    def idle(self) -> Deferred[None]:
        """Fires once no write is under way (at once if none is)."""
        if self._running is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._idle.append(done)
        return done

    def _begin_next(self) -> None:
        # Also called from callbacks of the write that just settled (a caller
        # putting again at once): whichever call comes first begins the next.
        if self._running is not None or not self._waiting or self._paused:
            return
        if self._retry is not None and self._retry.active():
            return  # the first in line waits for its next try
        self._retry = None
        write = self._running = self._waiting.popleft()
        write.begun = True
        self._began_at = self.clock.seconds()
        self.run(write).addBoth(self._finished, write)

    def _wait_out(self, outcome: Failure, write: Write) -> bool:
        """
        Put ``write``, which found the database locked, back first in line to
        be tried again after a pause; False once the lock has been waited out
        for longer than the queue's patience.
        """
        now = self.clock.seconds()
        if self._locked_since is None:
            self._locked_since = self._began_at
            self._tries = 0
            self.on_lock(len(self._waiting) + 1)
        assert self._locked_since is not None
        if now - self._locked_since >= self.patience:
            return False
        pause = min(LOCK_RETRY_MAX_SECONDS, LOCK_RETRY_FIRST_SECONDS * 2**self._tries)
        self._tries += 1
        self._waiting.appendleft(write)
        # Counted from the start of the try: one that waited out a busy
        # timeout has paused long enough already.
        delay = max(0.0, self._began_at + pause - now)
        self._retry = self.clock.callLater(delay, self._begin_next)
        return True

    def _fail_impatient(self, outcome: Failure, first: Write | None = None) -> None:
        """
        Fail ``first`` (an impatient write that found the lock), and the
        impatient writes waiting. Whoever waits for one of those to settle
        (:meth:`settled`) waits for the write before it in line instead,
        since writes settle in order.
        """
        kept: deque[Write] = deque()
        failed = [] if first is None else [first]
        before: Write | None = None
        for each in self._waiting:
            if each.patient:
                kept.append(each)
                before = each
            else:
                failed.append(each)
                if before is not None:
                    before.settled.extend(each.settled)
                    each.settled = []
        self._waiting = kept
        for each in failed:
            try:
                each.fail(outcome)
            finally:
                for done in each.settled:
                    done.callback(None)

    def _unlocked(self, let_go: bool) -> None:
        """The write first in line got past the lock (``let_go``), or gave up on it."""
        if self._locked_since is not None:
            held = self.clock.seconds() - self._locked_since
            self._locked_since = None
            self.on_unlock(held, let_go)

    def _finished(self, outcome: object, write: Write) -> None:
        self._running = None
        try:
            self._outcome(outcome, write)
        finally:
            if self._running is None:
                idle, self._idle = self._idle, []
                for done in idle:
                    done.callback(None)

    def _outcome(self, outcome: object, write: Write) -> None:
        if isinstance(outcome, Failure) and self.locked(outcome):
            if not write.patient:
                self._fail_impatient(outcome, write)
                self._begin_next()
                return
            if self._wait_out(outcome, write):
                # Back first in line (held up, from now on): the impatient
                # writes waiting behind it fail now.
                self._fail_impatient(outcome)
                return
            # Waited out for longer than the patience: this write and every
            # one waiting fail now, instead of each waiting as long again.
            given_up = [write, *self._waiting]
            self._waiting.clear()
            self._unlocked(False)
            for each in given_up:
                self._settle(outcome, each)
            self._begin_next()
            return
        self._unlocked(True)
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
            self._settle(outcome, write)
        finally:
            # Whatever became of this one, the writes after it must go on.
            self._begin_next()

    def _settle(self, outcome: object, write: Write) -> None:
        """Tell ``write``'s callers its outcome, then those waiting for it to settle."""
        try:
            outcome = self.noted(outcome)
            if isinstance(outcome, Failure):
                write.fail(outcome)
            else:
                write.settle(outcome)
        finally:
            for done in write.settled:
                done.callback(None)
