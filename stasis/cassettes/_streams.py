"""
A streamed answer as its list of events, each with when it arrived.

The body is cut where the recorder cut it (the same splitters), so each event
is shown by itself (:mod:`~stasis.cassettes._sse`, :mod:`~stasis.cassettes._aws`)
and, when the timeline's offsets are exactly those event ends, carries its
``ms`` after the start of the answer. Bytes after the last whole event (a
stream cut off) are one more element without ``ms``. Reading concatenates the
elements: a stream comes back byte for byte, with the same pace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from stasis.cassettes._aws import frame_fields, read_frame
from stasis.cassettes._fields import Fields
from stasis.cassettes._sse import read_sse_event, sse_event_fields
from stasis.model import Timeline
from stasis.streams.framing import (
    EVENTSTREAM_MEDIA_TYPE,
    SSE_MEDIA_TYPE,
    EventStreamSplitter,
    Splitter,
    SSESplitter,
)

__all__ = ["StreamKind", "read_events", "stream_events", "stream_kind"]

StreamKind = Literal["sse", "eventstream"]

#: The largest offset or ms a timeline holds (the store packs them as uint32).
UINT32_MAX = 2**32 - 1


def stream_kind(content_type: bytes) -> StreamKind | None:
    """Which stream format a Content-Type names, or None for a body that is not a stream."""
    media_type = content_type.split(b";")[0].strip().lower()
    if media_type == SSE_MEDIA_TYPE:
        return "sse"
    if media_type == EVENTSTREAM_MEDIA_TYPE:
        return "eventstream"
    return None


def _codec(kind: StreamKind) -> tuple[Splitter, Callable[[bytes], dict[str, Any]]]:
    if kind == "sse":
        return SSESplitter(), sse_event_fields
    return EventStreamSplitter(), frame_fields


def stream_events(
    body: bytes, timeline: Timeline | None, kind: StreamKind
) -> tuple[list[dict[str, Any]], bool] | None:
    """
    ``body``'s events as documents, and whether they took the timeline in
    (their ``ms``); None when not one whole event is in it.
    """
    splitter, describe = _codec(kind)
    events = splitter.feed(body)
    if not events:
        return None
    documents = [describe(event) for event in events]
    ends: list[int] = []
    for event in events:
        ends.append((ends[-1] if ends else 0) + len(event))
    if ends[-1] < len(body):
        documents.append(describe(body[ends[-1] :]))
    if timeline is None or [offset for offset, _ in timeline] != ends:
        return documents, False
    for document, (_, ms) in zip(documents, timeline, strict=False):
        document["ms"] = ms
    return documents, True


def read_events(response: Fields, kind: StreamKind) -> tuple[bytes, Timeline | None]:
    """The body the ``events`` of ``response`` make, and the timeline their ``ms`` make."""
    read = read_sse_event if kind == "sse" else read_frame
    chunks: list[bytes] = []
    timeline: list[tuple[int, int]] = []
    offset = 0
    for index, value in enumerate(response.array("events")):
        event = response.item("events", index, value)
        chunk = read(event)
        ms = event.optional_integer("ms", 0, UINT32_MAX)
        event.done()
        chunks.append(chunk)
        offset += len(chunk)
        if ms is not None:
            if offset > UINT32_MAX:
                raise event.error("ms", "the stream is too long for a timeline")
            timeline.append((offset, ms))
    return b"".join(chunks), tuple(timeline) or None
