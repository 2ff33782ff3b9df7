"""
Where a request goes: one upstream for everything, per-provider overrides, or
each provider's public API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from attrs import field, frozen

from stasis.errors import BadRequest
from stasis.log import url_for_log
from stasis.providers import Provider, RequestView

__all__ = ["Routes", "check_target", "join_url"]

#: A path segment that names an API version: ``v1``, ``v2``, ``v1beta``.
_VERSION = re.compile(r"v\d+[a-z]*\d*")


def check_target(method: str, target: str) -> None:
    """
    Refuse, with :class:`BadRequest`, a request target stasis must not forward.

    stasis is a reverse proxy: what it forwards is a path on an upstream it
    was configured with, so only origin-form targets (``/v1/…``) are taken.
    An absolute URL or a ``CONNECT`` would ask it to reach a host of the
    client's choosing; a target not starting with ``/`` would be read as part
    of the upstream's authority (``:4292/…`` a port, ``.attacker.tld/…`` a
    host name). A fragment is never sent (so a path judged with one is not
    the path forwarded), and a ``.`` or ``..`` segment would be resolved by the
    upstream into a path other than the one stasis judged cacheable.
    """
    if method == "CONNECT":
        raise BadRequest(
            "stasis is a reverse proxy, not a forward proxy: CONNECT is not supported; "
            "point the SDK's base URL at stasis instead"
        )
    if not target.startswith("/"):
        raise BadRequest(
            "the request target must be a path starting with '/': stasis is a reverse "
            "proxy, not a forward proxy; point the SDK's base URL at stasis instead"
        )
    if "#" in target:
        raise BadRequest("the request target must not carry a fragment ('#')")
    path = target.partition("?")[0]
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        raise BadRequest("the request path must not contain '.' or '..' segments")


def join_url(base: str, path: str, query: str) -> str:
    """
    The upstream URL for ``path`` and ``query`` (as the request sent them) on
    ``base``: its scheme and authority, always; its path in front of ``path``.

    Joined part by part, never by concatenating text, so that nothing in the
    request can reach into the authority. When ``base``'s path ends with the
    version segment ``path`` starts with (``--upstream http://host/v1`` and
    ``/v1/chat/completions``: the SDKs' own base URLs end in ``/v1``), it is
    not doubled.
    """
    parts = urlsplit(base)
    prefix = parts.path.rstrip("/")
    last = prefix.rpartition("/")[2]
    if _VERSION.fullmatch(last) and (path == f"/{last}" or path.startswith(f"/{last}/")):
        prefix = prefix[: -len(last) - 1]
    return urlunsplit((parts.scheme, parts.netloc, prefix + path, query, ""))


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

    def url_for(self, provider: Provider, request: RequestView) -> str:
        """The URL ``request`` is forwarded to (its target checked by :func:`check_target`)."""
        return join_url(self.upstream_for(provider, request), request.path, request.query)

    def describe(self) -> str:
        """For the start-up log line: without a password an upstream URL may carry."""
        parts = [f"{name}={url_for_log(url)}" for name, url in sorted(self.overrides.items())]
        parts.append(
            url_for_log(self.everything) if self.everything else "each provider's public API"
        )
        return ", ".join(parts)
