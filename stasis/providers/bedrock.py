"""
AWS Bedrock Runtime: ``/model/{modelId}/invoke|converse`` and their streaming twins.

Requests are signed with SigV4 for the host the client talked to, so the
proxy verifies and re-signs them (:mod:`stasis.upstream.aws`); the cache key
takes who signed (access key ID and region), never the signature. Bedrock
API keys (``Authorization: Bearer``) are a plain credential like any other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from stasis.keys import KeyPolicy
from stasis.model import TokenUsage
from stasis.numbers import LARGEST_COUNT, whole_number
from stasis.providers._base import Provider, RequestView, int_field
from stasis.providers.anthropic import anthropic_stream_text
from stasis.sigv4 import sigv4_of
from stasis.streams.events import StreamEvent

__all__ = ["BEDROCK"]

_OPERATION = re.compile(
    r"/model/([^/]+)/(invoke|invoke-with-response-stream|converse|converse-stream)$"
)


def _converse_usage(usage: Any) -> TokenUsage:
    input_tokens = int_field(usage, "inputTokens")
    output_tokens = int_field(usage, "outputTokens")
    return TokenUsage.of(input_tokens, output_tokens, int_field(usage, "totalTokens"))


def bedrock_usage(document: Any, headers: Mapping[str, str] | None = None) -> TokenUsage:
    """
    Converse answers carry ``usage``; InvokeModel answers are the model's own
    JSON, with the counts in ``x-amzn-bedrock-*-token-count`` headers.
    """
    if isinstance(document, dict) and isinstance(document.get("usage"), dict):
        usage = document["usage"]
        if "inputTokens" in usage or "totalTokens" in usage:
            return _converse_usage(usage)
    headers = headers or {}
    input_tokens = _header_int(headers, "x-amzn-bedrock-input-token-count")
    output_tokens = _header_int(headers, "x-amzn-bedrock-output-token-count")
    if input_tokens or output_tokens:
        return TokenUsage.of(input_tokens, output_tokens)
    # An Anthropic model's own body (input_tokens/output_tokens) through InvokeModel.
    usage = document.get("usage") if isinstance(document, dict) else None
    input_tokens, output_tokens = (
        int_field(usage, "input_tokens"),
        int_field(usage, "output_tokens"),
    )
    return TokenUsage.of(input_tokens, output_tokens)


def _header_int(headers: Mapping[str, str], name: str) -> int:
    return whole_number(headers.get(name, "").strip(), LARGEST_COUNT) or 0


def _stream_usage(event: StreamEvent, usage: TokenUsage) -> TokenUsage:
    """ConverseStream's ``metadata`` event, or InvokeModel's ``invocationMetrics`` chunk."""
    data = event.data
    if not isinstance(data, dict):
        return usage
    if isinstance(data.get("usage"), dict) and event.name == "metadata":
        return _converse_usage(data["usage"])
    metrics = data.get("amazon-bedrock-invocationMetrics")
    if isinstance(metrics, dict):
        input_tokens = int_field(metrics, "inputTokenCount")
        output_tokens = int_field(metrics, "outputTokenCount")
        return TokenUsage.of(input_tokens, output_tokens)
    return usage


def _delta_text(block: Any) -> str:
    """``{"delta": {"text": …}}``: a ConverseStream ``contentBlockDelta`` (and Nova's)."""
    delta = block.get("delta") if isinstance(block, dict) else None
    text = delta.get("text") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else ""


def _model_chunk_text(data: dict[str, Any]) -> str:
    """
    The text of one of a model's own events, which InvokeModelWithResponseStream
    wraps: each model family spells it its own way.
    """
    if data.get("type") == "content_block_delta":  # Anthropic
        return anthropic_stream_text(StreamEvent(name=None, data=data))
    if "contentBlockDelta" in data:  # Amazon Nova
        return _delta_text(data["contentBlockDelta"])
    for name in ("generation", "outputText", "completion"):  # Llama, Titan, Claude v2
        if isinstance(data.get(name), str):
            return str(data[name])
    outputs = data.get("outputs")  # Mistral
    if isinstance(outputs, list):
        return "".join(
            o["text"] for o in outputs if isinstance(o, dict) and isinstance(o.get("text"), str)
        )
    return ""


def _stream_text(event: StreamEvent) -> str:
    """ConverseStream's ``contentBlockDelta`` events, or the model events of an invoke stream."""
    data = event.data
    if not isinstance(data, dict):
        return ""
    if event.name == "contentBlockDelta":
        return _delta_text(data)
    if event.name == "chunk":
        return _model_chunk_text(data)
    return ""


def _recognise(request: RequestView) -> bool:
    return sigv4_of(request.headers) is not None or _OPERATION.search(request.path) is not None


def _model(path: str, document: Any) -> str | None:
    match = _OPERATION.search(path)
    return unquote(match.group(1)) if match else None


def _public_upstream(request: RequestView) -> str | None:
    """The region's endpoint: the signature's credential scope names the region."""
    signed = sigv4_of(request.headers)
    region = (
        signed.region
        if signed
        else os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    )
    return f"https://bedrock-runtime.{region}.amazonaws.com" if region else None


BEDROCK = Provider(
    name="bedrock",
    public_upstream=_public_upstream,
    cacheable=_OPERATION,
    recognise=_recognise,
    usage=bedrock_usage,
    model=_model,
    stream_usage=_stream_usage,
    stream_text=_stream_text,
    key_policy=KeyPolicy(
        varying_headers=frozenset({"accept", "content-type"}),
        varying_prefixes=("x-amzn-bedrock-",),
    ),
    routing_hint="a Bedrock request without a SigV4 signature does not name its region: set "
    "AWS_REGION for stasis or start it with "
    "--upstream bedrock=https://bedrock-runtime.REGION.amazonaws.com",
)
