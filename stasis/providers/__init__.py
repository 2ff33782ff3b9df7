"""
The LLM APIs stasis understands, and how a request is matched to one.

Providers are tried in order, the most specific signs first; OpenAI, whose
wire format many other services copy, is the fallback.
"""

from __future__ import annotations

from stasis.providers._base import Provider, RequestView
from stasis.providers.anthropic import ANTHROPIC
from stasis.providers.azure import AZURE
from stasis.providers.bedrock import BEDROCK
from stasis.providers.gemini import GEMINI
from stasis.providers.openai import OPENAI

__all__ = [
    "ANTHROPIC",
    "AZURE",
    "BEDROCK",
    "GEMINI",
    "OPENAI",
    "PROVIDERS",
    "Provider",
    "RequestView",
    "by_name",
    "identify",
]

#: In the order they are tried.
PROVIDERS: tuple[Provider, ...] = (BEDROCK, AZURE, GEMINI, ANTHROPIC, OPENAI)


def identify(request: RequestView) -> Provider:
    """The provider whose API ``request`` belongs to."""
    for provider in PROVIDERS:
        if provider.recognise(request):
            return provider
    return OPENAI


def by_name(name: str) -> Provider:
    """The provider called ``name``; ``KeyError`` for an unknown one."""
    for provider in PROVIDERS:
        if provider.name == name:
            return provider
    raise KeyError(name)
