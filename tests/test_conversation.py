"""
:func:`stasis.conversation.conversation`: a stored entry as a person reads it,
one example per API shape, and any body at all read without an error.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stasis.conversation import Conversation, Message, conversation
from stasis.model import Entry, StoredRequest
from tests.fake_upstream import chat_completion_stream


def entry(
    request: Any,
    answer: Any,
    *,
    provider: str = "openai",
    content_type: bytes = b"application/json",
) -> Entry:
    def raw(value: Any) -> bytes:
        return value if isinstance(value, bytes) else json.dumps(value).encode()

    return Entry(
        key="00" * 32,
        status=200,
        headers=((b"content-type", content_type),),
        body=raw(answer),
        created_at=1.0,
        provider=provider,
        request=StoredRequest(body=raw(request)),
    )


def test_openai_chat_with_content_parts_and_tool_calls() -> None:
    request = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "look", "arguments": '{"at":"it"}'}}],
            },
            {"role": "tool", "content": "a cat"},
        ],
    }
    answer = {"choices": [{"message": {"role": "assistant", "content": "A cat."}}]}
    assert conversation(entry(request, answer)) == Conversation(
        messages=(
            Message("system", "Be brief."),
            Message("user", "What is in\n[image]"),
            Message("assistant", '[tool_use look] {"at":"it"}'),
            Message("tool", "a cat"),
        ),
        answer="A cat.",
    )


def test_openai_responses_input_and_instructions() -> None:
    request = {
        "model": "gpt-4o-mini",
        "instructions": "Answer in French.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {"type": "function_call", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "output": "sunny"},
        ],
    }
    answer = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "bonjour"}]},
        ]
    }
    assert conversation(entry(request, answer)) == Conversation(
        messages=(
            Message("system", "Answer in French."),
            Message("user", "hello"),
            Message("assistant", "[tool_use weather] {}"),
            Message("tool", "[tool_result] sunny"),
        ),
        answer="bonjour",
    )
    assert conversation(entry({"input": "hi"}, {"output_text": "yo"})) == Conversation(
        (Message("user", "hi"),), "yo"
    )


def test_anthropic_messages_with_tool_blocks() -> None:
    request = {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "name": "weather", "input": {"city": "Oslo"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "content": "rain"}]},
        ],
    }
    answer = {
        "type": "message",
        "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "Rain."}],
    }
    assert conversation(entry(request, answer, provider="anthropic")) == Conversation(
        messages=(
            Message("system", "You are terse."),
            Message("user", "weather?"),
            Message("assistant", '[tool_use weather] {"city":"Oslo"}'),
            Message("user", "[tool_result] rain"),
        ),
        answer="Rain.",
    )


def test_gemini_contents_and_system_instruction() -> None:
    request = {
        "systemInstruction": {"parts": [{"text": "Rhyme."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "sky"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
        ],
    }
    answer = {
        "candidates": [
            {"content": {"parts": [{"text": "ponder", "thought": True}, {"text": "blue"}]}}
        ]
    }
    assert conversation(entry(request, answer, provider="gemini")) == Conversation(
        messages=(
            Message("system", "Rhyme."),
            Message("user", "sky"),
            Message("assistant", "[tool_use f] {}"),
        ),
        answer="blue",
    )


def test_bedrock_converse() -> None:
    request = {
        "system": [{"text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [{"text": "hi"}]},
            {"role": "assistant", "content": [{"toolUse": {"name": "t", "input": {"a": 1}}}]},
            {"role": "user", "content": [{"toolResult": {"content": [{"json": {"ok": True}}]}}]},
        ],
    }
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": "hello"}]}}}
    assert conversation(entry(request, answer, provider="bedrock")) == Conversation(
        messages=(
            Message("system", "Be kind."),
            Message("user", "hi"),
            Message("assistant", '[tool_use t] {"a":1}'),
            Message("user", '[tool_result] {"ok":true}'),
        ),
        answer="hello",
    )


def test_embeddings_and_legacy_completions() -> None:
    embeddings = {"model": "text-embedding-3-small", "input": ["one", "two"]}
    vectors = {"data": [{"embedding": [0.1, 0.2]}]}
    assert conversation(entry(embeddings, vectors)) == Conversation(
        (Message("user", "one"), Message("user", "two")), None
    )
    assert conversation(entry({"input": [1, 2, 3]}, vectors)) == Conversation((), None)
    completions = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say"}
    assert conversation(entry(completions, {"choices": [{"text": " this"}]})) == Conversation(
        (Message("user", "Say"),), " this"
    )


def test_a_streamed_answer_is_its_text_reassembled() -> None:
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    body = b"".join(chat_completion_stream(dict(request, stream=True)))
    read = conversation(entry(request, body, content_type=b"text/event-stream"))
    assert read.answer == "echo #__SERIAL__: hi"
    assert read.messages == (Message("user", "hi"),)


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"\xff\xfe", b"[" * 100_000, b"null", b'{"messages": 7}']
)
def test_a_body_in_no_known_shape_reads_as_nothing(body: bytes) -> None:
    assert conversation(entry(body, body)) == Conversation((), None)
    assert conversation(entry(body, body, content_type=b"text/event-stream")).messages == ()


def test_an_entry_without_its_request_has_no_messages() -> None:
    stored = entry({}, {"choices": [{"message": {"content": "x"}}]})
    assert conversation(attrs.evolve(stored, request=None)) == Conversation((), "x")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            [
                "messages", "contents", "input", "prompt", "system", "instructions", "role",
                "content", "parts", "text", "type", "tool_calls", "function", "name",
                "arguments", "toolUse", "toolResult", "functionCall", "functionResponse",
                "json", "output", "message", "choices", "candidates", "output_text",
                "systemInstruction", "thought", "delta", "tool_use", "tool_result",
            ]
        )
        | st.text(max_size=3),
        children,
        max_size=5,
    ),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    request=JSON,
    answer=JSON | st.binary(max_size=50),
    content_type=st.sampled_from(
        [b"application/json", b"text/event-stream", b"application/vnd.amazon.eventstream"]
    ),
    provider=st.sampled_from(["openai", "anthropic", "gemini", "bedrock", "azure", "nope"]),
)
def test_any_json_reads_without_an_error(
    request: Any, answer: Any, content_type: bytes, provider: str
) -> None:
    read = conversation(entry(request, answer, provider=provider, content_type=content_type))
    assert all(isinstance(m.role, str) and isinstance(m.text, str) for m in read.messages)
    assert read.answer is None or isinstance(read.answer, str)
