"""
Where one event of a streamed answer ends, for the two stream formats LLM APIs use.

Server-sent events (``text/event-stream``) end at a blank line; AWS event
stream messages (``application/vnd.amazon.eventstream``) carry their total
length in their first four bytes. Splitters are fed the body chunk by chunk,
however the network cut it, and hand back whole events.
"""

from __future__ import annotations

import re
from typing import Protocol

__all__ = ["EventStreamSplitter", "SSESplitter", "Splitter", "splitter_for"]

SSE_MEDIA_TYPE = b"text/event-stream"
EVENTSTREAM_MEDIA_TYPE = b"application/vnd.amazon.eventstream"

# An event ends at an empty line; lines end in CRLF, LF or CR (WHATWG HTML §9.2.5), and a
# CR followed by LF is one line end, never two.
_LINE_END = rb"(?:\r\n|\r(?!\n)|\n)"
_EVENT_END = re.compile(_LINE_END + _LINE_END)


class Splitter(Protocol):
    def feed(self, data: bytes) -> list[bytes]:
        """Take more of the body; return the events it completed, raw."""


class SSESplitter:
    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._pending + data
        events: list[bytes] = []
        start = 0
        if b"\r" not in buffer:
            # What every provider sends: lines end in LF alone, so an event
            # ends at the first LF LF, found at C speed (the pattern below
            # costs ~30 µs a kilobyte, and holds the chunk's relay back).
            while (end := buffer.find(b"\n\n", start)) != -1:
                events.append(buffer[start : end + 2])
                start = end + 2
            self._pending = buffer[start:]
            return events
        while True:
            match = _EVENT_END.search(buffer, start)
            if match is None:
                break
            end = match.end()
            # A lone CR at the very end may be the first half of a CRLF still on its way.
            if buffer[end - 1 : end] == b"\r" and end == len(buffer):
                break
            events.append(buffer[start:end])
            start = end
        self._pending = buffer[start:]
        return events


class EventStreamSplitter:
    _PRELUDE = 12

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._pending + data
        events: list[bytes] = []
        start = 0
        while len(buffer) - start >= self._PRELUDE:
            total = int.from_bytes(buffer[start : start + 4], "big")
            if total < 16 or len(buffer) - start < total:
                break
            events.append(buffer[start : start + total])
            start += total
        self._pending = buffer[start:]
        return events


def splitter_for(content_type: bytes) -> Splitter | None:
    """The splitter for a response's Content-Type, or None when it is not a stream."""
    media_type = content_type.split(b";")[0].strip().lower()
    if media_type == SSE_MEDIA_TYPE:
        return SSESplitter()
    if media_type == EVENTSTREAM_MEDIA_TYPE:
        return EventStreamSplitter()
    return None
