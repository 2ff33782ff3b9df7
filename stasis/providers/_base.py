"""
What stasis knows about one LLM API: data plus a few small functions.

Adding a provider means writing one module that builds a :class:`Provider`;
the proxy asks it whether a request is its own, where its upstream is,
whether it may be cached, and how to read the model and the token usage of
an answer, streamed or not, and the text a stream spells out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from attrs import field, frozen

from stasis.keys import DEFAULT_POLICY, KeyPolicy
from stasis.model import TokenUsage
from stasis.numbers import LARGEST_COUNT
from stasis.streams.events import StreamEvent

__all__ = ["Provider", "RequestView", "body_model", "fixed_upstream", "int_field", "last_usage"]


@frozen
class RequestView:
    """What a provider may look at to recognise and route a request."""

    method: str
    path: str
    query: str
    #: Lower-case names.
    headers: Mapping[str, str]


def int_field(mapping: Any, name: str) -> int:
    """``mapping[name]`` as a non-negative int, or 0 when absent or not a number."""
    if not isinstance(mapping, dict):
        return 0
    value = mapping.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0  # 1e999 in JSON
    return min(max(int(value), 0), LARGEST_COUNT)


def last_usage(
    event: StreamEvent, usage: TokenUsage, read: Callable[[Any], TokenUsage]
) -> TokenUsage:
    """For streams whose events each may carry the usage so far: keep the latest seen."""
    found = read(event.data)
    return found if found.total else usage


def fixed_upstream(url: str) -> Callable[[RequestView], str | None]:
    return lambda request: url


def _no_usage(event: StreamEvent, usage: TokenUsage) -> TokenUsage:
    return usage


def _no_text(event: StreamEvent) -> str:
    return ""


def body_model(path: str, document: Any) -> str | None:
    """The ``model`` field of a JSON request body, where most APIs name it."""
    if isinstance(document, dict):
        model = document.get("model")
        if isinstance(model, str):
            return model
    return None


@frozen
class Provider:
    """
    One API's routing and caching facts.

    ``cacheable`` matches the paths of the inference endpoints: only a POST
    to one of them is ever stored, so calls that create or change state
    (files, batches, fine-tunes) can never be answered from the cache.

    A streamed answer is stored only when it is whole: when ``stream_done``
    saw the format's terminal event (or, for formats without one, when the
    body ended cleanly), so a stream cut short is never replayed as complete.
    """

    name: str
    #: The public API a request goes to when no --upstream says otherwise; None: unknown.
    public_upstream: Callable[[RequestView], str | None]
    cacheable: re.Pattern[str]
    recognise: Callable[[RequestView], bool]
    #: Token usage of a whole answer: (parsed body, lower-case response headers).
    usage: Callable[[Any, Mapping[str, str]], TokenUsage]
    key_policy: KeyPolicy = DEFAULT_POLICY
    #: The model a request is for: (path, parsed body).
    model: Callable[[str, Any], str | None] = field(default=body_model)
    #: The event that says a stream is whole; None: the clean end of the body says so.
    stream_done: Callable[[StreamEvent], bool] | None = None
    #: The token usage after one more event of a stream.
    stream_usage: Callable[[StreamEvent, TokenUsage], TokenUsage] = field(default=_no_usage)
    #: The answer text one event of a stream adds (a delta); "" for an event that adds
    #: none. Joined over a stream's events, the text a person would have read
    #: (``stasis show``, the web UI).
    stream_text: Callable[[StreamEvent], str] = field(default=_no_text)
    #: Said in a 400 when the request cannot be routed (no public upstream known).
    routing_hint: str = ""

    def is_cacheable(self, method: str, path: str) -> bool:
        return method == "POST" and self.cacheable.search(path.rstrip("/")) is not None
