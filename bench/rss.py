"""
Resident memory of a process, and a client that stops reading a huge stream.

``VmRSS`` is sampled from ``/proc/PID/status`` by a background thread while a
load runs; ``VmHWM`` (the kernel's own peak) is read after it. The stalled
client is the case that shows whether stasis applies back-pressure: if it
buffers what the client does not read, its memory grows with the stream.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

__all__ = ["Sampler", "memory", "stall_stream"]

MIB = 1024 * 1024


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid``, in bytes."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return found


class Sampler:
    """The largest ``VmRSS`` of ``pid`` seen while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, memory(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stall_stream(
    url: str, body: bytes, headers: dict[str, str], read_bytes: int, stall_seconds: float, pid: int
) -> tuple[str, int, int]:
    """
    Ask ``url`` for a stream, read ``read_bytes`` of it, then stop reading.

    Returns the X-Stasis-Status seen, the bytes read, and the peak ``VmRSS`` of
    ``pid`` over the stall. The connection is closed afterwards, which is also
    how the stalled response ends.
    """
    parts = urlsplit(url)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while len(received) < read_bytes:
            more = sock.recv(read_bytes - len(received))
            if not more:
                break
            received += more
        status = "-"
        for line in received.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n"):
            if line.lower().startswith("x-stasis-status:"):
                status = line.split(":", 1)[1].strip().upper()
        with Sampler(pid) as sampler:
            time.sleep(stall_seconds)
    return status, len(received), sampler.peak
