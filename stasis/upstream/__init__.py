"""Talking to the real LLM APIs: the treq client and the header rules."""

from stasis.upstream.client import UpstreamClient, make_client

__all__ = ["UpstreamClient", "make_client"]
