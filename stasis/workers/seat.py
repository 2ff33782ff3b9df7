"""
What the supervisor tells a worker process: its seat.

A worker is the same daemon as the one started, so it is told the parsed
:class:`~stasis.config.Config` itself rather than re-parsing a command line:
the values are exactly the supervisor's (``$STASIS_DB`` and the other
variables read once, defaults the same, embedders' configs included), and an
option added later needs no forwarding. The listening socket and the tally
arrive as inherited descriptors, at the numbers the seat names.

The seat travels on the worker's stdin, a pipe from the supervisor, as one
length-prefixed pickle; the pipe then stays open, and its end tells the
worker that the supervisor is gone. Pickle is safe here because only the
supervisor can write to that pipe, and it keeps secrets (a database URL's
password, say) out of the process list, where a command line would show them.
"""

from __future__ import annotations

import os
import pickle
import struct

from attrs import frozen

from stasis.config import Config

__all__ = ["LISTENING_FD", "REPORT_FD", "TALLY_FD", "Seat", "SeatError"]

#: Where a worker finds what it inherits (stdin, stdout, stderr are 0-2).
REPORT_FD = 3
LISTENING_FD = 4
TALLY_FD = 5

_LENGTH = struct.Struct("!I")


class SeatError(Exception):
    """The worker was not given a seat: it was not started by a supervisor."""


@frozen
class Seat:
    """One worker's place among ``workers``: which slot, which socket, which settings."""

    config: Config
    #: The worker's slot, 0 to ``workers - 1``: its counters, and its name in logs and ``/health``.
    index: int
    workers: int
    #: The listening socket's address family (the socket is at :data:`LISTENING_FD`).
    family: int
    #: How long a stopping worker lets requests in flight finish before it cuts them.
    drain_seconds: float
    #: The admin token the supervisor made up (no ``--admin-token``): one for all workers.
    admin_token: str | None = None

    def to_bytes(self) -> bytes:
        """The seat as the supervisor writes it to the worker's stdin."""
        data = pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        return _LENGTH.pack(len(data)) + data

    @classmethod
    def read(cls, fd: int = 0) -> Seat:
        """Read the seat from ``fd`` (blocking: a worker has nothing else to do yet)."""
        (length,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
        seat = pickle.loads(_read_exactly(fd, length))
        if not isinstance(seat, cls):
            raise SeatError(f"stdin held a {type(seat).__name__}, not a seat")
        return seat


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise SeatError("stdin ended before a seat was read: start workers with --workers")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
