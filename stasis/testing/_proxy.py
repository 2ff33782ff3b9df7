"""
What a test sees of the session's daemon: its URL, the base URL each
provider's SDK should use, its statistics, and the environment variables
that send the official SDKs to it.

SDK clients read their base URL from the environment but no headers, so a
test's directives (from ``@pytest.mark.stasis``) travel in the URL instead:
the daemon serves ``/_stasis/with/mode=replay;namespace=a/v1/...`` as
``/v1/...`` with those directives, as if they had come as ``X-Stasis-*``
headers. A header the test sends itself still wins.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from attrs import evolve, field, frozen

from stasis.testing._errors import MarkerError
from stasis.testing._settings import ALIASES, MODES

__all__ = [
    "DIRECTIVE_PREFIX",
    "PROVIDERS",
    "Directives",
    "Provider",
    "StasisProxy",
    "replay_placeholders",
]

#: Where the directives of a request target begin.
DIRECTIVE_PREFIX = "/_stasis/with/"
#: An HTTP client for the daemon on loopback that ignores ``$http_proxy``.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: ``X-Stasis-Replay``'s values.
REPLAY_PACES = ("fast", "realtime")


@frozen
class Provider:
    """Where a provider's SDK reads its base URL from, and what it expects there."""

    name: str
    #: The environment variable the official SDK reads its base URL from.
    variable: str
    #: What follows the proxy's address in that base URL (``/v1`` for OpenAI).
    suffix: str = ""


#: The providers whose SDKs the plugin can point at the daemon through the environment.
PROVIDERS: Mapping[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider("openai", "OPENAI_BASE_URL", "/v1"),
        Provider("anthropic", "ANTHROPIC_BASE_URL"),
        # boto3 and botocore (>= 1.31) read a per-service endpoint from here.
        Provider("bedrock", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
        # google-genai, for the Gemini API (not Vertex AI).
        Provider("gemini", "GOOGLE_GEMINI_BASE_URL"),
        # AzureOpenAI; pointed at the daemon only when it was set, since the
        # daemon must be told the real resource (--upstream azure=URL).
        Provider("azure", "AZURE_OPENAI_ENDPOINT"),
    )
}
#: The providers pointed at the daemon unless the session decides otherwise.
DEFAULT_PROVIDERS = ("openai", "anthropic", "bedrock", "gemini")

#: Credentials the SDKs refuse to start without, and stand-ins for replay mode,
#: where a daemon in the shared credential scope replays for any key or none.
#: Each entry: the variables any one of which means "the user has one", and
#: what to set when none is set.
_PLACEHOLDERS: tuple[tuple[tuple[str, ...], Mapping[str, str]], ...] = (
    (("OPENAI_API_KEY",), {"OPENAI_API_KEY": "sk-stasis-replay"}),
    (("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"), {"ANTHROPIC_API_KEY": "sk-ant-stasis-replay"}),
    (("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"), {"AZURE_OPENAI_API_KEY": "stasis-replay"}),
    (("GOOGLE_API_KEY", "GEMINI_API_KEY"), {"GEMINI_API_KEY": "stasis-replay"}),
    (
        ("AWS_ACCESS_KEY_ID", "AWS_PROFILE"),
        {"AWS_ACCESS_KEY_ID": "AKIASTASISREPLAY", "AWS_SECRET_ACCESS_KEY": "stasis-replay"},
    ),
    (("AWS_REGION", "AWS_DEFAULT_REGION"), {"AWS_DEFAULT_REGION": "us-east-1"}),
)


def replay_placeholders(environ: Mapping[str, str]) -> dict[str, str]:
    """The stand-in credentials to set for replay mode, given what ``environ`` has."""
    chosen: dict[str, str] = {}
    for present, values in _PLACEHOLDERS:
        if not any(environ.get(name) for name in present):
            chosen.update(values)
    return chosen


def _text(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MarkerError(f"@pytest.mark.stasis: {name} must be text, not {value!r}")
    text = str(value).strip()
    if not text:
        raise MarkerError(f"@pytest.mark.stasis: {name} must not be empty")
    return text


def _choice(name: str, value: object, allowed: Iterable[str]) -> str:
    text = _text(name, value).lower()
    allowed = tuple(allowed)
    if text not in allowed:
        raise MarkerError(
            f"@pytest.mark.stasis: {name}={value!r} is not one of {', '.join(allowed)}"
        )
    return text


@frozen
class Directives:
    """A test's directives: None leaves each to the session (or the daemon's default)."""

    mode: str | None = None
    namespace: str | None = None
    #: Seconds a stored entry stays valid.
    ttl: str | None = None
    #: ``fast`` or ``realtime``.
    replay: str | None = None

    @classmethod
    def of(cls, args: tuple[object, ...], kwargs: Mapping[str, object]) -> Directives:
        """A marker's arguments as directives; :class:`MarkerError` for any it does not take."""
        if args:
            raise MarkerError(
                "@pytest.mark.stasis takes keyword arguments only "
                f"(mode=, namespace=, ttl=, replay=), not {args!r}"
            )
        unknown = sorted(set(kwargs) - {"mode", "namespace", "ttl", "replay"})
        if unknown:
            raise MarkerError(
                f"@pytest.mark.stasis: unknown argument {', '.join(unknown)}; "
                "it takes mode, namespace, ttl and replay"
            )
        mode = kwargs.get("mode")
        if mode is not None:
            mode = _choice("mode", mode, [*MODES, *ALIASES])
            mode = ALIASES.get(mode, mode)
        ttl = kwargs.get("ttl")
        if ttl is not None and not _text("ttl", ttl).isdigit():
            raise MarkerError(f"@pytest.mark.stasis: ttl must be whole seconds, not {ttl!r}")
        namespace, replay = kwargs.get("namespace"), kwargs.get("replay")
        return cls(
            mode=mode,
            namespace=None if namespace is None else _text("namespace", namespace),
            ttl=None if ttl is None else _text("ttl", ttl),
            replay=None if replay is None else _choice("replay", replay, REPLAY_PACES),
        )

    @classmethod
    def merged(cls, closest_first: Iterable[Directives]) -> Directives:
        """One set from several markers (function, class, module): the closest wins."""
        result = cls()
        for directives in reversed(list(closest_first)):
            result = evolve(
                result,
                **{name: value for name, value in directives.items() if value is not None},
            )
        return result

    def items(self) -> list[tuple[str, str | None]]:
        return [
            ("mode", self.mode),
            ("namespace", self.namespace),
            ("ttl", self.ttl),
            ("replay", self.replay),
        ]

    def prefix(self) -> str:
        """The directive prefix of a request target (``""`` when there is nothing to say)."""
        given = [
            f"{name}={quote(value, safe='')}" for name, value in self.items() if value is not None
        ]
        return DIRECTIVE_PREFIX.rstrip("/") + "/" + ";".join(given) if given else ""


@frozen
class StasisProxy:
    """
    The session's daemon as one test sees it.

    ``url`` is the daemon's address, for its own endpoints (``/stats``,
    ``/health``); :meth:`base_url` is what an SDK client should be given,
    with the test's directives in it.
    """

    url: str
    #: The session's mode (the daemon's ``--mode``).
    session_mode: str
    directives: Directives = Directives()
    #: The providers whose base-URL variables :meth:`environ` sets.
    providers: tuple[str, ...] = field(default=DEFAULT_PROVIDERS)

    @property
    def mode(self) -> str:
        """The mode this test's calls are served in."""
        return self.directives.mode or self.session_mode

    @property
    def namespace(self) -> str | None:
        return self.directives.namespace

    def with_directives(self, directives: Directives) -> StasisProxy:
        return evolve(self, directives=directives)

    def base_url(self, provider: str = "openai") -> str:
        """
        The base URL for ``provider``'s SDK (``openai``, ``anthropic``, ``bedrock``,
        ``gemini``, ``azure``): the daemon, this test's directives, and the path the
        SDK expects (``/v1`` for OpenAI).
        """
        try:
            suffix = PROVIDERS[provider].suffix
        except KeyError:
            raise ValueError(
                f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}"
            ) from None
        return self.url + self.directives.prefix() + suffix

    def environ(self) -> dict[str, str]:
        """The base-URL variables that send the official SDKs to this proxy."""
        return {PROVIDERS[name].variable: self.base_url(name) for name in self.providers}

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """The daemon's ``GET /stats``: counters since the session began, and the cache's size."""
        with _DIRECT.open(self.url + "/stats", timeout=timeout) as response:
            document: dict[str, Any] = json.loads(response.read())
        return document
