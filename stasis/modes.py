"""
Cache modes and the per-request directives that choose them.

A request may pick its mode with ``X-Stasis-Mode`` or with the standard
``Cache-Control`` request directives; the server's ``--mode`` is the fallback.
Bad values are rejected here, before anything is read or fetched, so that a
typo never silently turns into a call that costs money.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from attrs import frozen

from stasis.ignore import IgnorePath, parse_ignore_list
from stasis.numbers import whole_number

__all__ = [
    "BadDirective",
    "Directives",
    "Mode",
    "parse_directives",
]


class Mode(enum.Enum):
    """What the proxy may do with the cache and the upstream for one request."""

    #: Serve a hit; on a miss fetch, store and serve.
    CACHE = "cache"
    #: Never read; always fetch, and overwrite what was stored.
    FRESH = "fresh"
    #: Neither read nor write: a plain proxy.
    BYPASS = "bypass"
    #: Serve a hit; a miss is an error and never reaches the upstream.
    REPLAY = "replay"

    @classmethod
    def parse(cls, value: str) -> Mode:
        """Look a mode up by name, case-insensitively; ``ValueError`` lists the choices."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(
                f"unknown mode {_shown(value)}; allowed values: {', '.join(cls.names())}"
            ) from None

    @classmethod
    def names(cls) -> list[str]:
        return [mode.value for mode in cls]


#: Cache-Control request directives (RFC 9111) and the modes they mean, strongest first:
#: a request that says both only-if-cached and no-cache must still never go upstream.
_CACHE_CONTROL = (
    ("only-if-cached", Mode.REPLAY),
    ("no-store", Mode.BYPASS),
    ("no-cache", Mode.FRESH),
)

MODE_HEADER = "x-stasis-mode"
TTL_HEADER = "x-stasis-ttl"
NAMESPACE_HEADER = "x-stasis-namespace"
REPLAY_HEADER = "x-stasis-replay"
IGNORE_HEADER = "x-stasis-ignore"
SAMPLES_HEADER = "x-stasis-samples"

#: The most answers one key may keep (``X-Stasis-Samples``, ``--samples``).
MAX_SAMPLES = 100
#: The longest X-Stasis-TTL: 2**31 seconds, some 68 years (RFC 9111's largest delta-seconds).
MAX_TTL_SECONDS = 2**31
#: What a delta-seconds argument too large to represent counts as (RFC 9111 §1.2.2).
LARGEST_DELTA_SECONDS = 2**31
#: How much of a bad header value an error message repeats.
SHOWN_CHARACTERS = 40

#: A request target that begins with this carries directives in its path:
#: ``/_stasis/with/mode=replay;namespace=suite-a/v1/chat/completions``. SDKs
#: take a base URL from the environment but no headers; a base URL with this
#: prefix gives every client built from it the same directives.
DIRECTIVE_PREFIX = "/_stasis/with/"

#: The names the prefix accepts, and the header each stands for.
_PREFIX_NAMES = {
    "mode": MODE_HEADER,
    "namespace": NAMESPACE_HEADER,
    "ttl": TTL_HEADER,
    "replay": REPLAY_HEADER,
    "ignore": IGNORE_HEADER,
    "samples": SAMPLES_HEADER,
}

#: ``X-Stasis-Replay`` values: a recorded stream at once, or at its recorded pace.
REPLAY_PACES = ("fast", "realtime")

#: The longest namespace accepted; namespaces are labels, not payloads.
MAX_NAMESPACE_LENGTH = 200


class BadDirective(ValueError):
    """
    A stasis request header (or the directive prefix, ``header`` empty) has a
    value that cannot be honoured.
    """

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header
        self.message = message


def split_directive_prefix(target: str) -> tuple[str, dict[str, str]]:
    """
    ``target`` without a :data:`DIRECTIVE_PREFIX`, and the directives it
    carried as the header values they stand for (lower-case names; values as
    :func:`parse_directives` reads headers: UTF-8 bytes as latin-1 text).

    ``target`` is the request target as sent (ASCII, percent-encoded). A
    prefix that is not exactly ``name=value`` pairs of known names, separated
    by ``;`` and followed by the API path, is a :class:`BadDirective`.
    """
    if not target.startswith(DIRECTIVE_PREFIX):
        return target, {}
    segment, slash, rest = target[len(DIRECTIVE_PREFIX) :].partition("/")
    where = "the /_stasis/with/ path prefix"
    if not slash or "?" in segment:
        raise BadDirective(
            "", f"{where} must be followed by the API path: /_stasis/with/mode=replay/v1/..."
        )
    found: dict[str, str] = {}
    for part in filter(None, segment.split(";")):
        name, equals, value = part.partition("=")
        header = _PREFIX_NAMES.get(name)
        if header is None or not equals:
            raise BadDirective(
                "",
                f"{where}: {part!r} is not one of {', '.join(n + '=...' for n in _PREFIX_NAMES)}",
            )
        if header in found:
            raise BadDirective("", f"{where}: {name} is given twice")
        try:
            text = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise BadDirective("", f"{where}: the {name} is not valid UTF-8") from None
        found[header] = text.encode("utf-8", "surrogatepass").decode("latin-1")
    return "/" + rest, found


@frozen
class Directives:
    """What the client asked of the cache for one request."""

    mode: Mode
    ttl: int | None = None
    namespace: str = ""
    #: Replay a recorded stream at its recorded pace instead of at once.
    realtime: bool = False
    #: ``Cache-Control: max-age=N``: no hit older than N seconds.
    max_age: int | None = None
    #: ``Cache-Control: min-fresh=N``: no hit that expires within N seconds.
    min_fresh: int | None = None
    #: ``Cache-Control: max-stale[=N]``: a hit expired up to N seconds ago
    #: will do (``math.inf`` for a bare ``max-stale``).
    max_stale: float | None = None
    #: ``X-Stasis-Ignore``: fields left out of the key, besides ``--ignore``'s.
    ignore: tuple[IgnorePath, ...] = ()
    #: ``X-Stasis-Samples``: how many answers the key keeps (None: ``--samples``).
    samples: int | None = None


def _cache_control(value: str) -> dict[str, str | None]:
    """Request directives by lower-case name; the first of a name counts (RFC 9111 §4.2.1)."""
    found: dict[str, str | None] = {}
    for part in value.split(","):
        name, equals, argument = part.strip().partition("=")
        name = name.strip().lower()
        if name and name not in found:
            found[name] = argument.strip().strip('"') if equals else None
    return found


def _mode_from_cache_control(directives: Mapping[str, str | None]) -> Mode | None:
    for name, mode in _CACHE_CONTROL:
        if name in directives:
            return mode
    return None


def _shown(value: str) -> str:
    """A header value as an error message repeats it: quoted, and cut short if long."""
    if len(value) > SHOWN_CHARACTERS:
        return repr(value[:SHOWN_CHARACTERS]) + f"… ({len(value)} characters)"
    return repr(value)


def _seconds(argument: str | None) -> int | None:
    """
    A delta-seconds argument (RFC 9111 §1.2.2); None when it is not one. One
    too large to represent counts as 2**31, as §1.2.2 says it must.
    """
    return None if argument is None else whole_number(argument, LARGEST_DELTA_SECONDS)


def _freshness(directives: Mapping[str, str | None]) -> dict[str, Any]:
    """
    ``max-age``, ``min-fresh`` and ``max-stale`` as RFC 9111 §5.2.1 reads them.

    An unreadable ``max-age`` asks for nothing stale at all (``max-age=0``): a
    cache in doubt refetches. An unreadable ``min-fresh`` or ``max-stale``
    argument is left out.
    """
    found: dict[str, Any] = {}
    if "max-age" in directives:
        found["max_age"] = _seconds(directives["max-age"]) or 0
    min_fresh = _seconds(directives.get("min-fresh"))
    if min_fresh is not None:
        found["min_fresh"] = min_fresh
    if "max-stale" in directives:
        argument = directives["max-stale"]
        if argument is None:
            found["max_stale"] = math.inf
        elif _seconds(argument) is not None:
            found["max_stale"] = float(argument)
    return found


def _namespace(value: str) -> str:
    """
    The namespace a header value (latin-1 text, as read off the wire) names.

    A namespace is UTF-8 text; twisted.web hands header values over as bytes,
    which stasis reads as latin-1 (every byte a character), so the bytes come
    back exactly and are decoded as what they are. Whitespace is trimmed only
    after that, and only HTTP's (SP, HTAB): trimmed as latin-1 text, the A0
    that ends ``à`` (C3 A0) would be taken for a no-break space.
    """
    try:
        text = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadDirective(
            "X-Stasis-Namespace", "X-Stasis-Namespace: the value is not valid UTF-8"
        ) from None
    return text.strip(" \t")


def parse_directives(headers: Mapping[str, str], default: Mode) -> Directives:
    """
    Read the mode, TTL and namespace a request asks for.

    ``headers`` maps lower-case names to values, each header's bytes decoded as
    latin-1 (so that they come back exactly). ``X-Stasis-Mode`` wins over
    ``Cache-Control``; either wins over ``default``.
    """
    mode = default
    cache_control = _cache_control(headers.get("cache-control", ""))
    if cache_control:
        mode = _mode_from_cache_control(cache_control) or mode
    explicit = headers.get(MODE_HEADER)
    if explicit is not None:
        try:
            mode = Mode.parse(explicit)
        except ValueError as e:
            raise BadDirective("X-Stasis-Mode", f"X-Stasis-Mode: {e}") from None

    ttl: int | None = None
    raw_ttl = headers.get(TTL_HEADER)
    if raw_ttl is not None:
        ttl = whole_number(raw_ttl.strip(), MAX_TTL_SECONDS + 1)
        if ttl is None or not 0 < ttl <= MAX_TTL_SECONDS:
            raise BadDirective(
                "X-Stasis-TTL",
                f"X-Stasis-TTL: {_shown(raw_ttl)} is not a whole number of seconds "
                f"from 1 to {MAX_TTL_SECONDS}",
            )

    namespace = _namespace(headers.get(NAMESPACE_HEADER, ""))
    if len(namespace) > MAX_NAMESPACE_LENGTH or not namespace.isprintable():
        raise BadDirective(
            "X-Stasis-Namespace",
            "X-Stasis-Namespace: must be printable text of at most "
            f"{MAX_NAMESPACE_LENGTH} characters",
        )
    pace = headers.get(REPLAY_HEADER, "fast").strip().lower()
    if pace not in REPLAY_PACES:
        raise BadDirective(
            "X-Stasis-Replay",
            f"X-Stasis-Replay: unknown value {_shown(headers[REPLAY_HEADER])}; "
            f"allowed values: {', '.join(REPLAY_PACES)}",
        )
    ignore: tuple[IgnorePath, ...] = ()
    raw_ignore = headers.get(IGNORE_HEADER)
    if raw_ignore is not None:
        try:
            # UTF-8 bytes, read as latin-1 off the wire (see _namespace).
            ignore = parse_ignore_list(raw_ignore.encode("latin-1").decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError included
            raise BadDirective("X-Stasis-Ignore", f"X-Stasis-Ignore: {e}") from None
    samples: int | None = None
    raw_samples = headers.get(SAMPLES_HEADER)
    if raw_samples is not None:
        samples = _seconds(raw_samples.strip())
        if samples is None or not 1 <= samples <= MAX_SAMPLES:
            raise BadDirective(
                "X-Stasis-Samples",
                f"X-Stasis-Samples: {_shown(raw_samples)} is not a whole number "
                f"from 1 to {MAX_SAMPLES}",
            )
    return Directives(
        mode=mode,
        ttl=ttl,
        namespace=namespace,
        realtime=pace == "realtime",
        ignore=ignore,
        samples=samples,
        **_freshness(cache_control),
    )
