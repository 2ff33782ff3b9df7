"""
The recording side of a miss: a copy of the body, and for streams its timeline.

A stream is recorded as its raw bytes plus, per event, where the event ends
and how many milliseconds after the response began it arrived. That is enough
to replay the same bytes with the same event boundaries, at full speed or at
the recorded pace, and it costs eight bytes an event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

from stasis.model import TokenUsage
from stasis.streams.events import StreamEvent, decode_eventstream, decode_sse
from stasis.streams.framing import EVENTSTREAM_MEDIA_TYPE, Splitter, splitter_for

__all__ = ["Recorder", "StreamRules", "Timeline"]

#: Per event: (byte offset where it ends, milliseconds after the response began).
Timeline = tuple[tuple[int, int], ...]


class StreamRules(Protocol):
    """What a recording needs to know of its API's streams (a provider is one)."""

    @property
    def stream_done(self) -> Callable[[StreamEvent], bool] | None:
        """The event that says a stream is whole; None: the clean end of the body says so."""

    @property
    def stream_usage(self) -> Callable[[StreamEvent, TokenUsage], TokenUsage]:
        """The token usage after one more event."""


@define
class Recorder:
    """
    Collects a response body as it is relayed, and judges whether it is whole.

    Beyond ``limit`` bytes the recording is dropped (the relay goes on): an
    answer that large is not worth keeping in a cache of API calls.
    """

    provider: StreamRules
    content_type: bytes
    clock: IReactorTime
    limit: int
    _chunks: list[bytes] | None = field(factory=list, init=False)
    _size: int = field(default=0, init=False)
    _splitter: Splitter | None = field(init=False)
    _decode: Callable[[bytes], StreamEvent | None] = field(init=False)
    _events: list[tuple[int, int]] = field(factory=list, init=False)
    _offset: int = field(default=0, init=False)
    _started: float = field(init=False)
    _done: bool = field(default=False, init=False)
    usage: TokenUsage = field(default=TokenUsage(), init=False)

    def __attrs_post_init__(self) -> None:
        self._splitter = splitter_for(self.content_type)
        eventstream = self.content_type.lower().startswith(EVENTSTREAM_MEDIA_TYPE)
        self._decode = decode_eventstream if eventstream else decode_sse
        self._started = self.clock.seconds()

    @property
    def is_stream(self) -> bool:
        return self._splitter is not None

    def feed(self, data: bytes) -> None:
        if self._chunks is None:
            return
        self._size += len(data)
        if self._size > self.limit:
            self._chunks = None
            return
        self._chunks.append(data)
        if self._splitter is None:
            return
        elapsed = int((self.clock.seconds() - self._started) * 1000)
        for raw in self._splitter.feed(data):
            self._offset += len(raw)
            self._events.append((self._offset, elapsed))
            self._observe(raw)

    def _observe(self, raw: bytes) -> None:
        event = self._decode(raw)
        if event is None:
            return
        if self.provider.stream_done is not None and self.provider.stream_done(event):
            self._done = True
        self.usage = self.provider.stream_usage(event, self.usage)

    @property
    def complete(self) -> bool:
        """
        Whether what was recorded may be stored, given that the body ended cleanly.

        A stream also needs its provider's terminal event, when it has one.
        """
        if self._chunks is None:
            return False
        if self._splitter is None or self.provider.stream_done is None:
            return True
        return self._done

    @property
    def body(self) -> bytes | None:
        return None if self._chunks is None else b"".join(self._chunks)

    @property
    def timeline(self) -> Timeline | None:
        return tuple(self._events) if self._splitter is not None else None
