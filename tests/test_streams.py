"""
Stream framing, recording and paced replay, in memory (hypothesis for the splitters).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from stasis.model import TokenUsage
from stasis.providers import ANTHROPIC, GEMINI, OPENAI
from stasis.streams.events import decode_eventstream, decode_sse
from stasis.streams.framing import EventStreamSplitter, SSESplitter, splitter_for
from stasis.streams.recorder import Recorder
from stasis.streams.replay import pace
from tests.eventstream import encode_event

sse_lines = st.lists(
    st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=30),
    min_size=1,
    max_size=4,
)
newline = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def sse_events(draw: st.DrawFn) -> list[bytes]:
    events = []
    for lines in draw(st.lists(sse_lines, min_size=1, max_size=8)):
        end = draw(newline)
        events.append(("".join(f"data: {line}{end}" for line in lines) + end).encode())
    return events


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@given(events=sse_events(), points=st.lists(st.integers(min_value=0), max_size=20))
def test_sse_events_come_out_whole_however_the_network_cuts_them(
    events: list[bytes], points: list[int]
) -> None:
    data = b"".join(events)
    splitter = SSESplitter()
    found = [event for piece in cut(data, points) for event in splitter.feed(piece)]
    # A CR-terminated stream's last event waits for the next byte (it may be a CRLF).
    assert b"".join(found) in (data, b"".join(events[:-1]))
    assert found == events[: len(found)]
    assert len(found) >= len(events) - 1


@given(
    lines=st.lists(sse_lines, min_size=1, max_size=8),
    points=st.lists(st.integers(min_value=0), max_size=20),
)
def test_lf_only_sse_events_come_out_whole_and_all(
    lines: list[list[str]], points: list[int]
) -> None:
    """What providers send (LF line ends) takes the splitter's fast path: same events, none held."""
    events = [("".join(f"data: {line}\n" for line in event) + "\n").encode() for event in lines]
    data = b"".join(events)
    splitter = SSESplitter()
    found = [event for piece in cut(data, points) for event in splitter.feed(piece)]
    assert found == events


@given(
    payloads=st.lists(st.dictionaries(st.text(max_size=5), st.integers()), min_size=1, max_size=6),
    points=st.lists(st.integers(min_value=0), max_size=20),
)
def test_aws_event_stream_messages_come_out_whole(
    payloads: list[dict[str, int]], points: list[int]
) -> None:
    messages = [encode_event("contentBlockDelta", payload) for payload in payloads]
    splitter = EventStreamSplitter()
    found = [m for piece in cut(b"".join(messages), points) for m in splitter.feed(piece)]
    assert found == messages
    decoded = [decode_eventstream(m) for m in found]
    assert [(e.name, e.data) for e in decoded if e] == [("contentBlockDelta", p) for p in payloads]


def test_the_splitter_follows_the_content_type() -> None:
    assert isinstance(splitter_for(b"text/event-stream; charset=utf-8"), SSESplitter)
    assert isinstance(splitter_for(b"application/vnd.amazon.eventstream"), EventStreamSplitter)
    assert splitter_for(b"application/json") is None


def test_sse_events_decode_name_and_json_data() -> None:
    event = decode_sse(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    assert (event.name, event.kind, event.data) == (
        "message_stop",
        "message_stop",
        {"type": "message_stop"},
    )
    assert decode_sse(b"data: [DONE]\n\n").data == "[DONE]"


def sse(*events: dict[str, object] | str) -> list[bytes]:
    return [
        f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
        for event in events
    ]


def record(provider: object, events: list[bytes], clock: Clock | None = None) -> Recorder:
    recorder = Recorder(provider, b"text/event-stream", clock or Clock(), 1 << 20)  # type: ignore[arg-type]
    for event in events:
        recorder.feed(event)
    return recorder


def test_an_openai_stream_is_complete_only_at_done_and_counts_its_usage() -> None:
    chunks = sse(
        {"choices": [{"delta": {"content": "hi"}}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    )
    partial = record(OPENAI, chunks)
    assert not partial.complete
    whole = record(OPENAI, [*chunks, b"data: [DONE]\n\n"])
    assert whole.complete
    assert whole.usage.total == 5
    assert whole.body == b"".join([*chunks, b"data: [DONE]\n\n"])


def test_an_anthropic_stream_takes_input_from_start_and_output_from_the_last_delta() -> None:
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 12, "output_tokens": 1}},
    }
    delta = {"type": "message_delta", "usage": {"output_tokens": 7}}
    events = [
        f"event: message_start\ndata: {json.dumps(start)}\n\n".encode(),
        f"event: message_delta\ndata: {json.dumps(delta)}\n\n".encode(),
    ]
    recorder = record(ANTHROPIC, events)
    assert not recorder.complete
    assert (recorder.usage.input, recorder.usage.output, recorder.usage.total) == (12, 7, 19)
    recorder.feed(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    assert recorder.complete


def test_a_gemini_stream_needs_no_terminal_event_and_keeps_the_last_usage() -> None:
    recorder = record(
        GEMINI,
        sse(
            {"candidates": [], "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 5}},
            {
                "candidates": [],
                "usageMetadata": {
                    "promptTokenCount": 4,
                    "candidatesTokenCount": 6,
                    "totalTokenCount": 10,
                },
            },
        ),
    )
    assert recorder.complete
    assert recorder.usage.total == 10


def test_the_timeline_records_event_ends_and_arrival_times() -> None:
    clock = Clock()
    recorder = Recorder(OPENAI, b"text/event-stream", clock, 1 << 20)
    first, second = sse("a", "b")
    recorder.feed(first[:3])
    clock.advance(0.25)
    recorder.feed(first[3:] + second)
    assert recorder.timeline == ((len(first), 250), (len(first) + len(second), 250))


def test_a_recording_over_the_limit_is_dropped() -> None:
    recorder = Recorder(OPENAI, b"application/json", Clock(), 10)
    recorder.feed(b"x" * 11)
    assert recorder.body is None
    assert not recorder.complete


def test_pace_writes_each_event_at_its_offset_and_can_be_stopped() -> None:
    clock = Clock()
    body = b"aabbbcc!"
    written: list[tuple[float, bytes]] = []
    finished: list[float] = []
    pace(
        clock,
        body,
        ((2, 0), (5, 100), (7, 300)),
        lambda d: written.append((clock.seconds(), d)),
        lambda: finished.append(clock.seconds()),
    )
    assert written == [(0, b"aa")]
    clock.advance(0.1)
    clock.advance(0.2)
    assert [(round(t, 6), d) for t, d in written] == [
        (0, b"aa"),
        (0.1, b"bbb"),
        (0.3, b"cc"),
        (0.3, b"!"),
    ]
    assert [round(t, 6) for t in finished] == [0.3]
    written.clear()
    stop = pace(
        clock,
        body,
        ((2, 0), (5, 100)),
        lambda d: written.append((0, d)),
        lambda: finished.append(-1),
    )
    stop()
    clock.advance(1)
    assert written == [(0, b"aa")]
    assert len(finished) == 1


#: Characters str.splitlines() takes for line ends that SSE does not (WHATWG: CR, LF, CRLF only).
NOT_SSE_LINE_ENDS = ["\u2028", "\u2029", "\x85", "\v", "\f", "\x1c", "\x1d", "\x1e"]


def sse_encode(data: str, name: str | None = None, end: str = "\n") -> bytes:
    """One SSE event carrying ``data``: a ``data:`` line per line of it (CR, LF, CRLF split it)."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"event: {name}{end}" if name is not None else ""
    return (head + "".join(f"data: {line}{end}" for line in lines) + end).encode()


@pytest.mark.parametrize("char", NOT_SSE_LINE_ENDS)
def test_only_cr_and_lf_end_an_sse_line(char: str) -> None:
    document = f'{{"type": "x", "text": "a{char}b"}}'
    event = decode_sse(f"event: x{char}y\ndata: {document}\n\n".encode())
    assert event.name == f"x{char}y"
    assert event.data == {"type": "x", "text": f"a{char}b"}


@pytest.mark.parametrize("char", NOT_SSE_LINE_ENDS)
def test_a_responses_stream_keeps_its_usage_whatever_its_text_holds(char: str) -> None:
    """Unescaped U+2028 (or \\v, \\f...) in response.completed must not cost its usage."""
    completed = {
        "type": "response.completed",
        "response": {
            "output": [{"content": [{"type": "output_text", "text": "one@@two"}]}],
            "usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13},
        },
    }
    # Unescaped, as a server may send it (json.dumps would escape the control characters).
    data = json.dumps(completed).replace("@@", char)
    raw = f"event: response.completed\ndata: {data}\n\n".encode()
    event = decode_sse(raw)
    assert OPENAI.stream_done is not None and OPENAI.stream_done(event)
    usage = OPENAI.stream_usage(event, TokenUsage())
    assert (usage.input, usage.output, usage.total) == (9, 4, 13)
    recorder = record(OPENAI, [raw])
    assert recorder.complete
    assert recorder.usage.total == 13


def test_sse_fields_follow_the_whatwg_rules() -> None:
    raw = (
        b": a comment, ignored\r\n"
        b"event\r\n"  # no colon: the field name alone, its value empty
        b"data:no space\r"
        b"data:  two spaces\n"
        b"data\n"  # an empty data line still adds a line
        b"id: 7\r\n"
        b"retry: 10\r\n"
        b"unknown: ignored\r\n"
        b"\r\n"
    )
    event = decode_sse(raw)
    assert event.name == ""
    assert event.data == "no space\n two spaces\n"


sse_text = st.text(st.characters(codec="utf-8"), max_size=40)
sse_name = st.text(st.characters(codec="utf-8", blacklist_characters="\r\n"), max_size=10)


@given(
    events=st.lists(st.tuples(st.none() | sse_name, sse_text, newline), min_size=1, max_size=6),
    points=st.lists(st.integers(min_value=0), max_size=10),
)
def test_any_text_round_trips_through_sse(
    events: list[tuple[str | None, str, str]], points: list[int]
) -> None:
    """Encoded, cut anywhere, split and decoded: each event's name and text come back."""
    # "~" first: never JSON, so the data comes back as the text it was.
    raws = [sse_encode("~" + text, name, end) for name, text, end in events]
    splitter = SSESplitter()
    found = [splitter.feed(piece) for piece in cut(b"".join(raws), points)]
    decoded = [decode_sse(raw) for pieces in found for raw in pieces]
    # A CR-terminated stream's last event waits for the next byte (it may be a CRLF).
    assert len(decoded) >= len(events) - 1
    for event, (name, text, _) in zip(decoded, events[: len(decoded)], strict=True):
        assert event.name == name
        assert event.data == "~" + text.replace("\r\n", "\n").replace("\r", "\n")


@given(text=sse_text)
def test_any_json_document_round_trips_through_sse(text: str) -> None:
    document = {"type": "response.output_text.delta", "delta": text}
    assert decode_sse(sse_encode(json.dumps(document, ensure_ascii=False))).data == document
