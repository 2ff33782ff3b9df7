"""
The supervisor: what the daemon's own process does under ``--workers N``.

It binds the listening socket itself (``--listen``/``--port``; TCP, a unix
socket, or one systemd hands over), so that a port that is taken stops the
start-up as it does without workers, then spawns N worker processes that
adopt that one socket (``childFDs``): the kernel hands each new connection
to whichever worker accepts it first. The supervisor accepts nothing, opens
no database and serves nothing; it only keeps N workers running:

- Start-up: each worker reports on a pipe once it serves (its database
  opened, the socket adopted), or why it cannot. Once every worker serves,
  the supervisor logs the one "listening on" line and writes the ready file,
  so both still mean "requests are answered". A worker that cannot start is
  a start-up failure of the daemon, reported once (exit status 1).
- A worker that dies later is replaced, in the same slot (its counters go
  on), at once or after a back-off (:mod:`stasis.workers.restarts`).
- Stopping (SIGTERM, SIGINT: twistd stops this service) sends SIGTERM to
  every worker, which stops accepting and lets its requests in flight finish
  (``--shutdown-grace``), and waits for them all to exit; one that outstays
  the grace by :data:`EXIT_MARGIN_SECONDS` is killed. Nothing outlives the
  daemon.
- A worker whose supervisor is gone (even ``kill -9``) sees its stdin, a
  pipe from the supervisor, end, and stops the same way.

A worker's log goes straight to the supervisor's stdout and stderr (they
inherit them: no copying through this process), unless those are the null
device, as when twistd daemonizes: then its lines are relayed into the
supervisor's log.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import site
import socket
import sys
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProcessTransport
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.python.failure import Failure

import stasis
from stasis.config import Config
from stasis.log import logger
from stasis.notify import NOTIFY_SOCKET
from stasis.service import StartupError, cannot_listen, describe_port, write_ready_file
from stasis.web.admin.access import AdminAccess, new_token
from stasis.workers.restarts import Backoff
from stasis.workers.seat import LISTENING_FD, REPORT_FD, TALLY_FD, Seat
from stasis.workers.tally import make_tally_file

__all__ = ["EXIT_MARGIN_SECONDS", "Supervisor"]

log = logger("stasis.workers")

#: How long past ``--shutdown-grace`` the supervisor waits for a stopping
#: worker before it kills it: time for the worker to cut off what is left,
#: close its database and exit.
EXIT_MARGIN_SECONDS = 5.0

#: A worker's reports, one line each: ``ready<TAB>cache location`` or ``failed<TAB>why``.
READY = "ready"
FAILED = "failed"


def _discarded(fd: int) -> bool:
    """Whether ``fd`` is the null device (twistd daemonized): nobody reads what goes there."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return True


def _family(port: IListeningPort) -> int:
    address = port.getHost()
    if isinstance(address, IPv6Address):
        return socket.AF_INET6
    if isinstance(address, IPv4Address):
        return socket.AF_INET
    if isinstance(address, UNIXAddress):
        return socket.AF_UNIX
    raise StartupError(f"--workers cannot share a socket listening on {address}")


def _how_it_ended(reason: Failure) -> str:
    value = reason.value
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        try:
            name = signal.Signals(value.signal).name
        except ValueError:
            name = str(value.signal)
        return f"was killed by signal {value.signal} ({name})"
    if isinstance(value, ProcessTerminated | ProcessDone):
        return f"exited with status {value.exitCode}"
    return f"ended: {reason.getErrorMessage()}"


class _SharedSocket(Factory):
    """
    What the supervisor's own port is made with: it never accepts (the
    workers do), and it is named in twistd's "starting on" line.
    """

    noisy = False
    protocol = Protocol


@define(eq=False)
class _Slot:
    """One worker's place: the process in it now, and how its deaths are paced."""

    index: int
    backoff: Backoff = field(factory=Backoff)
    process: IProcessTransport | None = None
    #: The process's id, kept: its transport forgets it once the process has ended.
    pid: int | None = None
    started_at: float = 0.0
    #: Whether the process in the slot has said it serves.
    ready: bool = False
    #: Why the process in the slot could not start, if it said so.
    failure: str | None = None
    restart: IDelayedCall | None = None


class _WorkerProtocol(ProcessProtocol):
    """The supervisor's end of one worker process's pipes."""

    def __init__(self, supervisor: Supervisor, slot: _Slot, seat: bytes) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self._seat = seat
        self._partial: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        # The seat, on stdin; the pipe then stays open for as long as this
        # process lives, and its end tells the worker to stop.
        self.transport.write(self._seat)  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if childFD == REPORT_FD:
                self.supervisor._reported(self.slot, text)
            else:  # its stdout or stderr, relayed (see the module)
                _relay(text)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self.slot, reason)


#: A worker's log line: its time, its system (``stasis.http#info``), its text.
_LOG_LINE = re.compile(r"\S+ \[([^\]]*)\] (.*)")


def _relay(line: str) -> None:
    """Log a line a worker wrote, under its own system rather than with two timestamps."""
    if line.startswith("{"):
        # --log-format json: the worker's line is whole as it is (see stasis.log).
        log.info("{line}", line=line, relayed_json=True)
        return
    match = _LOG_LINE.fullmatch(line)
    if match is None:
        log.info("{line}", line=line)
    else:
        log.info("{line}", line=match.group(2), log_system=match.group(1))


class Supervisor(Service):
    """
    Runs ``config.workers`` worker processes serving one socket (see the
    module). Like :class:`~stasis.service.StasisService`: the socket is bound
    in :meth:`privilegedStartService`, :meth:`when_listening` says when the
    daemon serves (or fails with :class:`StartupError`), and :meth:`stopService`
    returns once every worker has exited.
    """

    def __init__(self, config: Config, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self._family = 0
        self._tally_fd: int | None = None
        self._slots = [_Slot(index) for index in range(config.workers)]
        self._stopping = False
        #: None until the start-up is over; then True, or the failure.
        self._outcome: bool | Failure | None = None
        self._waiting: list[Deferred[None]] = []
        self._all_ended: Deferred[None] | None = None
        #: Without --admin-token, the token every worker accepts (on a loopback
        #: listener), and the rule of when it is printed.
        self._access = AdminAccess(
            token=config.admin_token or new_token(), given=config.admin_token is not None
        )

    # Start-up

    def privilegedStartService(self) -> None:
        """Bind the socket (twistd calls this before dropping privileges); :class:`StartupError`."""
        if self.port is not None:
            return
        factory = _SharedSocket()
        results: list[IListeningPort | Failure] = []
        serverFromString(self.reactor, self.config.listen).listen(factory).addBoth(results.append)
        if not results:
            raise StartupError(
                f"--workers needs an endpoint that listens at once; {self.config.listen} does not"
            )
        [port] = results
        if isinstance(port, Failure):
            raise cannot_listen(self.config.listen, port)
        # The workers accept; this process never does.
        port.stopReading()  # type: ignore[attr-defined]
        try:
            if port.factory is not factory:  # type: ignore[attr-defined]
                # TLS (ssl:) wraps the factory: a worker adopting the bare
                # socket would speak plain HTTP on it.
                raise StartupError(f"--workers cannot share {self.config.listen}: TLS")
            self._family = _family(port)
        except StartupError:
            port.stopListening()
            raise
        self.port = port
        self._access.listening_on(port.getHost())

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]
        self._tally_fd = make_tally_file(len(self._slots))
        self.reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        for slot in self._slots:
            self._spawn(slot)

    def when_listening(self) -> Deferred[None]:
        """Fires once every worker serves, or fails with :class:`StartupError` if one cannot."""
        d: Deferred[None] = Deferred()
        if self._outcome is None:
            self._waiting.append(d)
        else:
            self._fire(d)
        return d

    def _fire(self, d: Deferred[None]) -> None:
        if isinstance(self._outcome, Failure):
            d.errback(self._outcome)
        else:
            d.callback(None)

    def _settle(self, outcome: bool | Failure) -> None:
        self._outcome = outcome
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._fire(d)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping or self.port is None or self._tally_fd is None:
            return
        seat = Seat(
            config=self.config,
            index=slot.index,
            workers=len(self._slots),
            family=self._family,
            drain_seconds=self.config.shutdown_grace,
            admin_token=None if self._access.given else self._access.token,
        )
        # Looked at now, not when made: twistd daemonizes in between.
        inherit = not (_discarded(1) or _discarded(2))
        output: dict[int, int | str] = {1: 1, 2: 2} if inherit else {1: "r", 2: "r"}
        slot.ready, slot.failure = False, None
        slot.started_at = self.reactor.seconds()
        slot.process = self.reactor.spawnProcess(
            _WorkerProtocol(self, slot, seat.to_bytes()),
            sys.executable,
            [sys.executable, "-m", "stasis.workers", str(slot.index)],
            env=_environment(),
            childFDs={
                0: "w",
                **output,
                REPORT_FD: "r",
                LISTENING_FD: self.port.fileno(),  # type: ignore[attr-defined]
                TALLY_FD: self._tally_fd,
            },
        )
        slot.pid = slot.process.pid

    # What the workers say and do

    def admin_token_to_announce(self) -> str | None:
        """The admin token the workers accept, to print at start (see StasisService's)."""
        return self._access.announced()

    def _reported(self, slot: _Slot, line: str) -> None:
        kind, _, detail = line.partition("\t")
        if kind == FAILED:
            slot.failure = detail
        elif kind == READY:
            slot.ready = True
            # A stop begun meanwhile (SIGTERM during the start-up) closed the
            # port: the daemon is not ready, and never will be.
            if self._stopping:
                return
            if self._outcome is None and all(s.ready for s in self._slots):
                self._serving(location=detail)

    def _serving(self, location: str) -> None:
        assert self.port is not None
        where = describe_port(self.port, self.config.listen)
        if self.config.ready_file:
            write_ready_file(self.config.ready_file, where)
        log.info(
            "stasis listening on {where} with {workers} workers, upstream {upstream}, "
            "cache {db}, mode {mode}",
            where=where,
            workers=len(self._slots),
            upstream=self.config.routes.describe(),
            db=location,
            mode=self.config.mode.value,
        )
        self._settle(True)

    def _ended(self, slot: _Slot, reason: Failure) -> None:
        slot.process = None
        pid = slot.pid
        how = _how_it_ended(reason)
        if self._stopping:
            if not reason.check(ProcessDone):
                log.warn("worker {index} (pid {pid}) {how}", index=slot.index, pid=pid, how=how)
            if self._all_ended is not None and all(s.process is None for s in self._slots):
                self._all_ended.callback(None)
            return
        if self._outcome is None and (slot.failure or not slot.ready):
            # It could not start: the others, alike, will not either.
            why = slot.failure or f"worker {slot.index} {how} before it served (see its log)"
            self._settle(Failure(StartupError(why)))
            return
        delay = slot.backoff.delay(self.reactor.seconds() - slot.started_at)
        log.warn(
            "worker {index} (pid {pid}) {how}{why}; starting another {when}",
            index=slot.index,
            pid=pid,
            how=how,
            why=f": {slot.failure}" if slot.failure else "",
            when=f"in {delay:g}s" if delay else "now",
        )
        slot.restart = self.reactor.callLater(delay, self._spawn, slot)

    # Stopping

    def stopService(self) -> Deferred[None]:
        """SIGTERM every worker, wait for all to exit (killing laggards), close the socket."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        for slot in self._slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
        if self.port is not None:
            # The workers' copies keep the socket open until they have stopped accepting.
            self.port.stopListening()
            self.port = None
        running = [slot for slot in self._slots if slot.process is not None]
        if not running:
            self._close_tally()
            return succeed(None)
        log.info("stopping {count} workers", count=len(running))
        self._all_ended = Deferred()
        self._signal(running, "TERM")
        kill = self.reactor.callLater(self._kill_after, self._kill_laggards)

        def ended(result: None) -> None:
            if kill.active():
                kill.cancel()
            self._close_tally()

        return self._all_ended.addCallback(ended)

    def hurry(self) -> None:
        """
        Tell the workers again to stop (SIGTERM): each then cuts off what it
        still has in flight at once, instead of at the end of the grace.
        """
        if self._stopping:
            self._signal([slot for slot in self._slots if slot.process is not None], "TERM")

    @property
    def _kill_after(self) -> float:
        """Seconds after SIGTERM that a worker still running is killed."""
        return self.config.shutdown_grace + EXIT_MARGIN_SECONDS

    def _kill_laggards(self) -> None:
        laggards = [slot for slot in self._slots if slot.process is not None]
        for slot in laggards:
            log.warn(
                "worker {index} (pid {pid}) still runs {seconds:g}s after SIGTERM: killing it",
                index=slot.index,
                pid=slot.pid,
                seconds=self._kill_after,
            )
        self._signal(laggards, "KILL")

    @staticmethod
    def _signal(slots: list[_Slot], name: str) -> None:
        for slot in slots:
            if slot.process is not None:
                with contextlib.suppress(ProcessExitedAlready):  # its processEnded is on its way
                    slot.process.signalProcess(name)

    def _close_tally(self) -> None:
        if self._tally_fd is not None:
            os.close(self._tally_fd)
            self._tally_fd = None


def _environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """
    A worker's environment: this process's, with the folder this stasis was
    imported from first on ``PYTHONPATH``, so that the worker runs this very
    code (a checkout on a path of its own, say) and not another installed copy.
    """
    env = dict(os.environ if environ is None else environ)
    # The supervisor alone speaks to systemd: once every worker serves.
    env.pop(NOTIFY_SOCKET, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(stasis.__file__)))
    if root in _site_folders():
        # Installed: the same interpreter finds it there by itself, and the
        # user's own PYTHONPATH must keep coming before site-packages.
        return env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _site_folders() -> set[str]:
    """The folders ``site`` puts on every interpreter's path (site-packages)."""
    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return {os.path.abspath(folder) for folder in folders}
