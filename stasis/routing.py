"""
Where a request goes: one upstream for everything, per-provider overrides, or
each provider's public API.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import field, frozen

from stasis.errors import BadRequest
from stasis.providers import Provider, RequestView

__all__ = ["Routes"]


@frozen
class Routes:
    """
    ``--upstream NAME=URL`` overrides win, then a bare ``--upstream URL`` (the
    original tool's one upstream for everything), then the provider's public API.
    """

    everything: str | None = None
    overrides: Mapping[str, str] = field(factory=dict)

    def upstream_for(self, provider: Provider, request: RequestView) -> str:
        url = (
            self.overrides.get(provider.name)
            or self.everything
            or provider.public_upstream(request)
        )
        if url is None:
            raise BadRequest(
                f"cannot route this {provider.name} request: {provider.routing_hint}",
                provider=provider.name,
            )
        return url.rstrip("/")

    def describe(self) -> str:
        """For the start-up log line."""
        parts = [f"{name}={url}" for name, url in sorted(self.overrides.items())]
        parts.append(self.everything or "each provider's public API")
        return ", ".join(parts)
