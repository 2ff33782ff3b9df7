"""
OpenAI's HTTP API: chat completions, completions, embeddings, the Responses
API and moderations are cacheable; everything that changes state is not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stasis.model import TokenUsage
from stasis.providers._base import Provider, RequestView, fixed_upstream, int_field
from stasis.streams.events import StreamEvent

__all__ = [
    "OPENAI",
    "OPENAI_CACHEABLE",
    "openai_stream_done",
    "openai_stream_text",
    "openai_stream_usage",
    "openai_usage",
]

#: The inference endpoints, also under Azure's /openai/deployments/{name}/ prefix.
OPENAI_CACHEABLE = re.compile(r"/(chat/completions|completions|embeddings|responses|moderations)$")


def openai_usage(document: Any, headers: Mapping[str, str] | None = None) -> TokenUsage:
    """
    Read ``usage`` from a chat/completions/embeddings or Responses API answer.

    Chat completions say ``prompt_tokens``/``completion_tokens``, the Responses
    API ``input_tokens``/``output_tokens``; both give ``total_tokens``.
    """
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return TokenUsage()
    input_tokens = int_field(usage, "prompt_tokens") or int_field(usage, "input_tokens")
    output_tokens = int_field(usage, "completion_tokens") or int_field(usage, "output_tokens")
    return TokenUsage.of(input_tokens, output_tokens, int_field(usage, "total_tokens"))


def openai_stream_done(event: StreamEvent) -> bool:
    """Chat and completions end at ``data: [DONE]``, the Responses API at ``response.completed``."""
    return event.data == "[DONE]" or event.kind == "response.completed"


def openai_stream_usage(event: StreamEvent, usage: TokenUsage) -> TokenUsage:
    """The usage chunk (``stream_options.include_usage``) or ``response.completed``'s usage."""
    data = event.data
    if not isinstance(data, dict):
        return usage
    if event.kind == "response.completed":
        return openai_usage(data.get("response"))
    if isinstance(data.get("usage"), dict):
        return openai_usage(data)
    return usage


def openai_stream_text(event: StreamEvent) -> str:
    """
    The text an event adds: a chat chunk's ``choices[].delta.content`` (a
    completions chunk's ``choices[].text``), or the Responses API's
    ``response.output_text.delta``. With ``n > 1`` the choices' texts are
    interleaved as they came; a request for several choices is rare enough.
    """
    data = event.data
    if not isinstance(data, dict):
        return ""
    if event.kind == "response.output_text.delta":
        delta = data.get("delta")
        return delta if isinstance(delta, str) else ""
    choices = data.get("choices")
    if not isinstance(choices, list):
        return ""
    pieces = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str):
            pieces.append(text)
    return "".join(pieces)


def _recognise(request: RequestView) -> bool:
    return True  # OpenAI's is the API every other provider is told apart from.


OPENAI = Provider(
    name="openai",
    public_upstream=fixed_upstream("https://api.openai.com"),
    cacheable=OPENAI_CACHEABLE,
    recognise=_recognise,
    usage=openai_usage,
    stream_done=openai_stream_done,
    stream_usage=openai_stream_usage,
    stream_text=openai_stream_text,
)
