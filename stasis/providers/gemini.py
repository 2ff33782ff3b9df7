"""
Google's Gemini API (generativelanguage.googleapis.com): ``/v1beta/models/{model}:{method}``.

The key travels in ``x-goog-api-key`` or in the ``key=`` query parameter; the
latter is taken out of the cache key and fingerprinted like any credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from stasis.keys import KeyPolicy
from stasis.model import TokenUsage
from stasis.providers._base import Provider, RequestView, fixed_upstream, int_field, last_usage
from stasis.streams.events import StreamEvent

__all__ = ["GEMINI"]

_METHOD = re.compile(
    r"/models/([^/:]+):(generateContent|streamGenerateContent|embedContent|"
    r"batchEmbedContents|countTokens)$"
)
_MODEL = re.compile(r"/models/([^/:]+):")


def gemini_usage(document: Any, headers: Mapping[str, str] | None = None) -> TokenUsage:
    """``usageMetadata``; a streamed JSON array carries the final figures in its last element."""
    if isinstance(document, list):
        document = document[-1] if document else None
    metadata = document.get("usageMetadata") if isinstance(document, dict) else None
    if not isinstance(metadata, dict):
        # countTokens answers {"totalTokens": N}.
        total = int_field(document, "totalTokens")
        return TokenUsage(input=total, total=total)
    input_tokens = int_field(metadata, "promptTokenCount")
    output_tokens = int_field(metadata, "candidatesTokenCount")
    return TokenUsage.of(input_tokens, output_tokens, int_field(metadata, "totalTokenCount"))


def _stream_usage(event: StreamEvent, usage: TokenUsage) -> TokenUsage:
    return last_usage(event, usage, gemini_usage)


def _stream_text(event: StreamEvent) -> str:
    """
    The text parts of ``candidates[0]``, each chunk's new text; a thinking
    model's thought summaries (parts marked ``"thought": true``) are not the answer.
    """
    data = event.data
    candidates = data.get("candidates") if isinstance(data, dict) else None
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return ""
    content = candidates[0].get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    )


def _recognise(request: RequestView) -> bool:
    return (
        "x-goog-api-key" in request.headers
        or ("key=" in request.query and any(name == "key" for name, _ in parse_qsl(request.query)))
        or _MODEL.search(request.path) is not None
    )


def _model(path: str, document: Any) -> str | None:
    match = _MODEL.search(path)
    return unquote(match.group(1)) if match else None


GEMINI = Provider(
    name="gemini",
    public_upstream=fixed_upstream("https://generativelanguage.googleapis.com"),
    cacheable=_METHOD,
    recognise=_recognise,
    usage=gemini_usage,
    model=_model,
    stream_usage=_stream_usage,
    stream_text=_stream_text,
    key_policy=KeyPolicy(
        varying_headers=frozenset(),
    ),
)
