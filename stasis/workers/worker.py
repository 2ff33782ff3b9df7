"""
A worker process: the daemon's service, on the supervisor's socket.

``python -m stasis.workers`` (only a :class:`~stasis.workers.supervisor.Supervisor`
starts it) reads its :class:`~stasis.workers.seat.Seat` from stdin, adopts the
listening socket and maps the tally it was handed, and runs the same service
the daemon runs alone (:class:`~stasis.service.StasisService`, as the command
line makes it: its log level, its settled heap), told which worker it is.
It runs its reactor itself: twistd would add nothing a worker needs (no pid
file, no daemonizing, no privileges to drop: the supervisor did all that).

It tells the supervisor, on a pipe, that it serves, or why it cannot; it
stops (letting its requests in flight finish) on SIGTERM or SIGINT, and when
its stdin ends: the supervisor is gone, and a worker must never outlive it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import globalLogBeginner
from twisted.python.failure import Failure

from stasis import log as logs
from stasis.service import StartupError, Worker
from stasis.tap import worker_service
from stasis.workers.seat import LISTENING_FD, REPORT_FD, TALLY_FD, Seat, SeatError
from stasis.workers.supervisor import FAILED, READY
from stasis.workers.tally import Tally

__all__ = ["main"]

log = logs.logger("stasis.workers")


class _Supervisor(Protocol):
    """
    The worker's end of its link to the supervisor: stdin in (nothing comes
    after the seat but its end), reports out.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def report(self, kind: str, detail: str) -> None:
        assert self.transport is not None
        self.transport.write(_report(kind, detail))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.reactor.running:
            log.info("the supervisor is gone: stopping (pid {pid})", pid=os.getpid())
        with contextlib.suppress(ReactorNotRunning):  # stopping already
            self.reactor.stop()


def _report(kind: str, detail: str) -> bytes:
    return f"{kind}\t{' '.join(detail.split())}\n".encode()


def main() -> None:
    """Run one worker until it is told to stop (see the module)."""
    try:
        seat = Seat.read(0)
    except SeatError as e:
        sys.stderr.write(f"stasis worker: {e}\n")
        raise SystemExit(2) from None

    logs.set_log_format(seat.config.log_format)
    globalLogBeginner.beginLoggingTo([logs.observer()])
    tally = Tally.map(TALLY_FD, seat.workers)
    os.close(TALLY_FD)
    worker = Worker(
        index=seat.index,
        endpoint=AdoptedStreamServerEndpoint(reactor, LISTENING_FD, seat.family),
        counters=tally.slot(seat.index),
        totals=tally.total(),
        admin_token=seat.admin_token,
    )
    try:
        # Building it can fail too: a --db this installation cannot open.
        service = worker_service(seat.config, worker, seat.drain_seconds)
        service.privilegedStartService()
        service.startService()
    except StartupError as e:
        os.write(REPORT_FD, _report(FAILED, str(e)))
        raise SystemExit(1) from None
    the_reactor: Any = reactor
    the_reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    link = _Supervisor(the_reactor)
    # Typed after the Windows StandardIO, which takes no descriptors.
    StandardIO(link, stdin=0, stdout=REPORT_FD, reactor=the_reactor)  # type: ignore[call-arg]

    def serving(port: IListeningPort) -> None:
        link.report(READY, service.store.location)

    service.when_listening().addCallback(serving)
    the_reactor.run()
