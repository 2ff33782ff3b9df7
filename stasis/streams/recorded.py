"""
A stored answer read back for a person: is it a stream, which events it was
made of (and when each came), and the text they spell. ``stasis show``, the
web UI and the store's text search (:mod:`stasis.conversation`) all read it so.

The events are cut where the recording cut them (the entry's timeline), or,
for an entry without one, by the same splitter the recording uses; the text
is the provider's to read (:attr:`stasis.providers.Provider.stream_text`).
"""

from __future__ import annotations

from attrs import frozen

from stasis.model import Entry
from stasis.providers import by_name
from stasis.streams.events import StreamEvent, decode_eventstream, decode_sse
from stasis.streams.framing import EVENTSTREAM_MEDIA_TYPE, splitter_for

__all__ = ["RecordedEvent", "content_type", "is_eventstream", "recorded_events", "stream_text"]


@frozen
class RecordedEvent:
    raw: bytes
    #: None when it cannot be decoded (an AWS event stream without botocore, a damaged one).
    event: StreamEvent | None
    #: Milliseconds after the answer began that it arrived; None when not recorded.
    at_ms: int | None


def content_type(entry: Entry) -> bytes:
    for name, value in entry.headers:
        if name.lower() == b"content-type":
            return value
    return b""


def is_eventstream(entry: Entry) -> bool:
    """An AWS event stream: binary messages, not text, on the wire."""
    return content_type(entry).lower().startswith(EVENTSTREAM_MEDIA_TYPE)


def _pieces(entry: Entry) -> list[tuple[bytes, int | None]]:
    body, timeline = entry.body, entry.timeline
    if timeline and timeline[-1][0] <= len(body):
        pieces: list[tuple[bytes, int | None]] = []
        start = 0
        for end, at_ms in timeline:
            pieces.append((body[start:end], at_ms))
            start = end
        if start < len(body):
            pieces.append((body[start:], None))
        return pieces
    splitter = splitter_for(content_type(entry))
    assert splitter is not None
    split: list[tuple[bytes, int | None]] = [(raw, None) for raw in splitter.feed(body)]
    rest = len(body) - sum(len(raw) for raw, _ in split)
    return split + ([(body[-rest:], None)] if rest else [])


def recorded_events(entry: Entry) -> list[RecordedEvent] | None:
    """The events of a streamed answer, in order; None for an answer that is not a stream."""
    if splitter_for(content_type(entry)) is None:
        return None
    eventstream = is_eventstream(entry)
    events = []
    for raw, at_ms in _pieces(entry):
        event = decode_eventstream(raw) if eventstream else decode_sse(raw)
        events.append(RecordedEvent(raw=raw, event=event, at_ms=at_ms))
    return events


def stream_text(entry: Entry, events: list[RecordedEvent]) -> str:
    """The text ``events`` spell, as the entry's provider reads them; "" if it reads none."""
    try:
        provider = by_name(entry.provider)
    except KeyError:
        return ""
    return "".join(provider.stream_text(e.event) for e in events if e.event is not None)
