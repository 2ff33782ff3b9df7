"""
The LLM APIs stasis understands, and how a request is matched to one.

Providers are tried in order; OpenAI, whose wire format many other services
copy, is the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping

from stasis.providers._base import Provider
from stasis.providers.anthropic import ANTHROPIC
from stasis.providers.openai import OPENAI

__all__ = ["ANTHROPIC", "OPENAI", "PROVIDERS", "Provider", "identify"]

#: In the order they are tried.
PROVIDERS: tuple[Provider, ...] = (ANTHROPIC, OPENAI)


def identify(path: str, headers: Mapping[str, str]) -> Provider:
    """The provider whose API ``path`` and ``headers`` (lower-case names) belong to."""
    for provider in PROVIDERS:
        if provider.recognise(path, headers):
            return provider
    return OPENAI
