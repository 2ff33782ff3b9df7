"""
Anthropic's Messages API, recognised by its version header, its key header or
its path: current SDKs may send the key as ``Authorization: Bearer``, so the
header alone is not enough.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stasis.providers._base import Provider, int_field
from stasis.store import TokenUsage

__all__ = ["ANTHROPIC"]


def anthropic_usage(document: Any) -> TokenUsage:
    """``input_tokens`` + ``output_tokens`` of a message (count_tokens has only input)."""
    if not isinstance(document, dict):
        return TokenUsage()
    usage = document.get("usage")
    if isinstance(usage, dict):
        input_tokens = int_field(usage, "input_tokens")
        output_tokens = int_field(usage, "output_tokens")
    else:
        input_tokens, output_tokens = int_field(document, "input_tokens"), 0
    return TokenUsage(input=input_tokens, output=output_tokens, total=input_tokens + output_tokens)


def _recognise(path: str, headers: Mapping[str, str]) -> bool:
    return (
        "anthropic-version" in headers
        or "x-api-key" in headers
        or path.rstrip("/").endswith(("/v1/messages", "/v1/messages/count_tokens"))
    )


ANTHROPIC = Provider(
    name="anthropic",
    public_upstream="https://api.anthropic.com",
    cacheable_paths=("/v1/messages", "/v1/messages/count_tokens"),
    recognise=_recognise,
    usage=anthropic_usage,
)
