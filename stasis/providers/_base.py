"""
What stasis knows about one LLM API: data plus a few small functions.

Adding a provider means writing one module that builds a :class:`Provider`;
the proxy asks it whether a request is its own, whether it may be cached, and
how to read the model and the token usage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrs import field, frozen

from stasis.keys import DEFAULT_POLICY, KeyPolicy
from stasis.store import TokenUsage
from stasis.streams.events import StreamEvent

__all__ = ["Provider", "int_field"]


def int_field(mapping: Any, name: str) -> int:
    """``mapping[name]`` as a non-negative int, or 0 when absent or not a number."""
    if not isinstance(mapping, dict):
        return 0
    value = mapping.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


def _body_stream(path: str, document: Any) -> bool:
    return isinstance(document, dict) and document.get("stream") is True


def _no_usage(event: StreamEvent, usage: TokenUsage) -> TokenUsage:
    return usage


def _body_model(document: Any) -> str | None:
    if isinstance(document, dict):
        model = document.get("model")
        if isinstance(model, str):
            return model
    return None


@frozen
class Provider:
    """
    One API's routing and caching facts.

    ``cacheable_paths`` are path suffixes of the inference endpoints: only a
    POST to one of them is ever stored, so calls that create or change state
    (files, batches, fine-tunes) can never be answered from the cache.

    A streamed answer is stored only when it is whole: when ``stream_done``
    saw the format's terminal event, so that a stream the upstream cut short
    after a clean-looking chunk is never replayed as if it were complete.
    """

    name: str
    public_upstream: str
    cacheable_paths: tuple[str, ...]
    recognise: Callable[[str, Mapping[str, str]], bool]
    usage: Callable[[Any], TokenUsage]
    key_policy: KeyPolicy = DEFAULT_POLICY
    model: Callable[[Any], str | None] = field(default=_body_model)
    #: Whether a request (path, parsed body) asks for a streamed answer.
    is_stream: Callable[[str, Any], bool] = field(default=_body_stream)
    #: The event that says a stream is whole; None: the clean end of the body says so.
    stream_done: Callable[[StreamEvent], bool] | None = None
    #: The token usage after one more event of a stream.
    stream_usage: Callable[[StreamEvent, TokenUsage], TokenUsage] = field(default=_no_usage)

    def is_cacheable(self, method: str, path: str) -> bool:
        return method == "POST" and path.rstrip("/").endswith(self.cacheable_paths)
