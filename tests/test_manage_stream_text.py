"""
``Provider.stream_text``: the text a recorded stream spells out, per provider.

Fed the very events the fake upstream sends (the providers' wire formats),
split and decoded the way a recording is, so a change in either side shows.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from stasis.providers import ANTHROPIC, AZURE, BEDROCK, GEMINI, OPENAI, PROVIDERS, Provider
from stasis.providers._base import RequestView
from stasis.streams.events import StreamEvent, decode_eventstream, decode_sse
from stasis.streams.framing import EventStreamSplitter, SSESplitter
from tests.eventstream import encode_event
from tests.fake_upstream import (
    anthropic_stream,
    chat_completion_stream,
    converse_stream_events,
    gemini_stream_chunks,
    invoke_stream_reply,
    responses_stream,
    sse_data,
    sse_event,
)


def sse_events(raw: list[bytes]) -> list[StreamEvent]:
    splitter = SSESplitter()
    return [decode_sse(event) for event in splitter.feed(b"".join(raw))]


def eventstream_events(raw: list[bytes]) -> list[StreamEvent]:
    splitter = EventStreamSplitter()
    decoded = [decode_eventstream(event) for event in splitter.feed(b"".join(raw))]
    assert None not in decoded
    return [event for event in decoded if event is not None]


def text(provider: Provider, events: list[StreamEvent]) -> str:
    return "".join(provider.stream_text(event) for event in events)


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.mark.parametrize("provider", [OPENAI, AZURE])
@pytest.mark.parametrize("include_usage", [False, True])
def test_a_chat_completions_stream_spells_its_deltas(
    provider: Provider, include_usage: bool
) -> None:
    request: dict[str, Any] = dict(CHAT, stream=True)
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    events = sse_events(chat_completion_stream(request))
    assert text(provider, events) == "echo #__SERIAL__: hi there"
    # The role chunk, the finish chunk, the usage chunk and [DONE] add nothing.
    assert provider.stream_text(events[-1]) == ""
    assert provider.stream_text(events[0]) == ""


def test_a_legacy_completions_stream_spells_its_choices_text() -> None:
    chunks = [{"object": "text_completion", "choices": [{"index": 0, "text": t}]} for t in "abc"]
    events = sse_events([*(sse_data(chunk) for chunk in chunks), b"data: [DONE]\n\n"])
    assert text(OPENAI, events) == "abc"


def test_a_responses_stream_spells_its_output_text_deltas() -> None:
    events = sse_events(responses_stream({"model": "gpt-4o-mini", "input": "hello"}))
    # output_text.done and the completed response repeat the text: counted once.
    assert text(OPENAI, events) == "reply #__SERIAL__: hello"


def test_an_anthropic_stream_spells_its_text_deltas_only() -> None:
    raw = anthropic_stream({"model": "claude-sonnet-4-5"})
    thinking = sse_event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
    )
    tool = sse_event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
    )
    events = sse_events([raw[0], thinking, *raw[1:-1], tool, raw[-1]])
    assert text(ANTHROPIC, events) == "hello #__SERIAL__"


def test_a_bedrock_converse_stream_spells_its_content_block_deltas() -> None:
    assert text(BEDROCK, eventstream_events(converse_stream_events(7))) == "bedrock #7"


def test_a_bedrock_invoke_stream_spells_the_models_own_events() -> None:
    events = eventstream_events(invoke_stream_reply(7).events or [])
    assert [event.name for event in events][:1] == ["chunk"]
    assert text(BEDROCK, events) == "invoked #7"


@pytest.mark.parametrize(
    "chunks",
    [
        [{"generation": "ll"}, {"generation": "ama", "stop_reason": "stop"}],  # Llama
        [{"outputText": "ll", "index": 0}, {"outputText": "ama"}],  # Titan
        [{"outputs": [{"text": "ll"}]}, {"outputs": [{"text": "ama", "stop_reason": "stop"}]}],
        [{"contentBlockDelta": {"delta": {"text": "llama"}, "contentBlockIndex": 0}}],  # Nova
    ],
)
def test_a_bedrock_invoke_stream_of_other_model_families(chunks: list[dict[str, Any]]) -> None:
    raw = [
        encode_event("chunk", {"bytes": base64.b64encode(json.dumps(chunk).encode()).decode()})
        for chunk in chunks
    ]
    assert text(BEDROCK, eventstream_events(raw)) == "llama"


def test_a_gemini_stream_spells_its_candidates_parts_but_not_thoughts() -> None:
    chunks = gemini_stream_chunks("gemini-2.5-flash")
    thought = {"candidates": [{"content": {"parts": [{"text": "plan", "thought": True}]}}]}
    raw = [b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in [thought, *chunks]]
    assert text(GEMINI, sse_events(raw)) == "gemini #__SERIAL__"


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "event",
    [
        StreamEvent(name=None, data="[DONE]"),
        StreamEvent(name="ping", data={"type": "ping"}),
        StreamEvent(name=None, data={"choices": "not a list", "candidates": [None]}),
        StreamEvent(name="chunk", data=["not", "a", "dict"]),
        StreamEvent(name="contentBlockDelta", data={"delta": {"text": 3}}),
    ],
)
def test_events_without_text_add_none(provider: Provider, event: StreamEvent) -> None:
    assert provider.stream_text(event) == ""


def test_a_provider_that_says_nothing_about_text_reads_none() -> None:
    bare = Provider(
        name="bare",
        public_upstream=lambda request: None,
        cacheable=OPENAI.cacheable,
        recognise=lambda request: isinstance(request, RequestView),
        usage=OPENAI.usage,
    )
    assert bare.stream_text(StreamEvent(name=None, data={"choices": [{"text": "x"}]})) == ""
