"""
Anthropic's Messages API, recognised by its version header, its key header or
its path: current SDKs may send the key as ``Authorization: Bearer``, so the
header alone is not enough.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stasis.model import TokenUsage
from stasis.providers._base import Provider, RequestView, fixed_upstream, int_field
from stasis.streams.events import StreamEvent

__all__ = ["ANTHROPIC", "anthropic_stream_text"]

_MESSAGES = re.compile(r"/v1/messages(/count_tokens)?$")


def anthropic_usage(document: Any, headers: Mapping[str, str] | None = None) -> TokenUsage:
    """``input_tokens`` + ``output_tokens`` of a message (count_tokens has only input)."""
    if not isinstance(document, dict):
        return TokenUsage()
    usage = document.get("usage")
    if isinstance(usage, dict):
        input_tokens = int_field(usage, "input_tokens")
        output_tokens = int_field(usage, "output_tokens")
    else:
        input_tokens, output_tokens = int_field(document, "input_tokens"), 0
    return TokenUsage.of(input_tokens, output_tokens)


def _stream_done(event: StreamEvent) -> bool:
    return event.kind == "message_stop"


def _stream_usage(event: StreamEvent, usage: TokenUsage) -> TokenUsage:
    """
    ``message_start`` carries the input tokens; each ``message_delta`` the
    cumulative output tokens (and, in newer API versions, input tokens again).
    """
    data = event.data
    if not isinstance(data, dict):
        return usage
    if event.kind == "message_start":
        message = data.get("message")
        found = message.get("usage") if isinstance(message, dict) else None
    elif event.kind == "message_delta":
        found = data.get("usage")
    else:
        return usage
    if not isinstance(found, dict):
        return usage
    input_tokens = int_field(found, "input_tokens") or usage.input
    output_tokens = int_field(found, "output_tokens") if "output_tokens" in found else usage.output
    return TokenUsage.of(input_tokens, output_tokens)


def anthropic_stream_text(event: StreamEvent) -> str:
    """A ``content_block_delta``'s ``text_delta`` (not thinking, not tool input JSON)."""
    data = event.data
    if not isinstance(data, dict) or data.get("type") != "content_block_delta":
        return ""
    delta = data.get("delta")
    if not isinstance(delta, dict) or delta.get("type") != "text_delta":
        return ""
    text = delta.get("text")
    return text if isinstance(text, str) else ""


def _recognise(request: RequestView) -> bool:
    return (
        "anthropic-version" in request.headers
        or "x-api-key" in request.headers
        or _MESSAGES.search(request.path.rstrip("/")) is not None
    )


ANTHROPIC = Provider(
    name="anthropic",
    public_upstream=fixed_upstream("https://api.anthropic.com"),
    cacheable=_MESSAGES,
    recognise=_recognise,
    usage=anthropic_usage,
    stream_done=_stream_done,
    stream_usage=_stream_usage,
    stream_text=anthropic_stream_text,
)
