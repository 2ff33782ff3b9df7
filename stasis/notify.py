"""
Telling systemd how the daemon is doing (``sd_notify``), when it asks.

A ``Type=notify`` unit starts the daemon with ``NOTIFY_SOCKET`` naming an
``AF_UNIX`` datagram socket; systemd counts the service as started only once
it reads ``READY=1`` there, so units ordered after stasis (and a
``systemctl start`` waiting on it) wait until requests are answered, not just
until the process exists. ``STOPPING=1`` says a stop is under way (the drain
may take ``--shutdown-grace``), ``STATUS=`` is the line ``systemctl status``
shows.

The protocol is one datagram of ``KEY=VALUE`` lines: a few lines of socket
code rather than a dependency. A name starting with ``@`` is a socket in the
abstract namespace (its first byte is NUL). Without ``NOTIFY_SOCKET`` (not
run by systemd, or by a unit of another type) nothing is sent; a socket that
cannot be reached is worth a warning, never a failed start.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from stasis.log import logger

__all__ = ["NOTIFY_SOCKET", "notify", "notify_socket"]

log = logger("stasis.service")

#: The variable systemd names its notification socket in.
NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify_socket(environ: Mapping[str, str] | None = None) -> str | bytes | None:
    """
    The address ``NOTIFY_SOCKET`` names, as ``socket.sendto`` takes it; None
    when it names none this process can use (unset, or not a unix socket: a
    ``vsock:`` address is for virtual machines' own systemd).
    """
    name = (os.environ if environ is None else environ).get(NOTIFY_SOCKET, "")
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None


def notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """
    Send ``lines`` (``READY=1``, ``STATUS=…``) to systemd as one message;
    whether it was sent. Does nothing outside a ``Type=notify`` unit.
    """
    address = notify_socket(environ)
    if address is None or not lines:
        return False
    message = "\n".join(lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
            sender.sendto(message, address)
    except OSError as e:
        log.warn(
            "cannot tell systemd {what} on {socket}: {error}",
            what=lines[0],
            socket=(os.environ if environ is None else environ).get(NOTIFY_SOCKET),
            error=e,
        )
        return False
    return True
