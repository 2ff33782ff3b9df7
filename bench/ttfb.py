"""
Time to first event of a streamed answer, over one keep-alive connection.

wrk reports when a whole response has arrived; for a stream what a user feels
is when the first event arrives. This client sends requests one after
another (so each measures latency, not queueing), times the first ``data:``
bytes of the body, then reads the rest of the chunked response so that the
connection can carry the next request.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

__all__ = ["measure_ttfb"]


async def _read_chunked(reader: asyncio.StreamReader, seen: bytes) -> None:
    """Read the rest of a chunked body whose first bytes (``seen``) are already read."""
    buffer = seen
    while True:
        while b"\r\n" not in buffer:
            more = await reader.read(65536)
            if not more:
                raise ConnectionError("the stream ended early")
            buffer += more
        size_line, _, buffer = buffer.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        need = size + 2
        while len(buffer) < need:
            more = await reader.read(max(65536, need - len(buffer)))
            if not more:
                raise ConnectionError("the stream ended early")
            buffer += more
        buffer = buffer[need:]
        if size == 0:
            return


async def _one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[float, str]:
    started = time.perf_counter()
    writer.write(request)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        more = await reader.read(65536)
        if not more:
            raise ConnectionError("the connection closed before the response headers")
        buffer += more
    head, _, body = buffer.partition(b"\r\n\r\n")
    while b"data:" not in body:
        more = await reader.read(65536)
        if not more:
            raise ConnectionError("the response has no event")
        body += more
    elapsed = time.perf_counter() - started
    headers = head.decode("latin-1").lower()
    status = "-"
    for line in headers.split("\r\n"):
        if line.startswith("x-stasis-status:"):
            status = line.split(":", 1)[1].strip().upper()
    if "transfer-encoding: chunked" not in headers:
        raise ConnectionError("expected a chunked stream")
    await _read_chunked(reader, body)
    return elapsed, status


async def _run(url: str, bodies: list[bytes], headers: dict[str, str]) -> tuple[list[float], str]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    times: list[float] = []
    status = "-"
    try:
        for body in bodies:
            request = (
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body
            elapsed, status = await _one(reader, writer, request)
            times.append(elapsed)
    finally:
        writer.close()
    return times, status


def measure_ttfb(
    url: str, bodies: list[bytes], headers: dict[str, str] | None = None
) -> tuple[list[float], str]:
    """Seconds to the first event for each body in turn, and the last X-Stasis-Status seen."""
    return asyncio.run(_run(url, bodies, headers or {}))
