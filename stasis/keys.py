"""
Cache key derivation: a pure function from a request's facts to a hex digest.

The key is the *meaning* of a request, not its bytes: JSON bodies are
canonicalised (keys sorted, whitespace dropped, ``1``, ``1.0`` and ``1e0`` the
same number, escapes resolved), the query is decoded and ordered, SDK noise
headers never take part, and the credential is folded in only as an HMAC under
a secret that lives with the database, so that two API keys never share
entries and no key can be recovered from what is stored. Ignore rules
(``--ignore``, ``X-Stasis-Ignore``) leave named fields of a JSON body out.

Nothing here does I/O or touches Twisted, so it can be property-tested alone.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from attrs import field, frozen

from stasis.canonical import MAX_JSON_DEPTH, canonical_into, canonical_json, unique_object
from stasis.canonical import Constant as _Constant
from stasis.canonical_stream import NotCanonical, canonical_parts
from stasis.ignore import IgnorePath, dropped, parse_ignore
from stasis.model import StoredRequest
from stasis.sigv4 import parse_authorization

__all__ = [
    "CREDENTIAL_HEADERS",
    "CREDENTIAL_QUERY_PARAMS",
    "KEY_VERSION",
    "WHOLE_BODY_BYTES",
    "WHOLE_KEY",
    "CredentialScope",
    "KeyPolicy",
    "KeyRequest",
    "ParsedBody",
    "ScopedKeys",
    "canonical_json",
    "credential_fingerprint",
    "credential_values",
    "derive_key",
    "normalized_body",
    "normalized_query",
    "parse_body",
    "scoped_keys",
    "stored_key",
    "stored_request",
]

#: Bumped whenever the derivation changes, so old entries simply stop matching.
KEY_VERSION = b"stasis-key-1"

#: A whole key as the store, ``X-Stasis-Key`` and ``stasis ls --json`` spell
#: it: 32 bytes in lower-case hex (``WHOLE_KEY.fullmatch(text)``).
WHOLE_KEY = re.compile(r"[0-9a-f]{64}")

#: Bodies up to this size are parsed whole to be keyed (~100 bytes of Python
#: objects a value, for a moment: a few MB at most); larger ones are spelled in
#: a stream (:mod:`stasis.canonical_stream`), in memory about their own size.
WHOLE_BODY_BYTES = 64 * 1024

#: Media types in ``Accept`` that ask for a streamed answer.
STREAM_MEDIA_TYPES = ("text/event-stream", "application/vnd.amazon.eventstream")


class CredentialScope(enum.Enum):
    """Whose entries a request may read and write."""

    #: Entries are keyed under the caller's credential fingerprint (the default):
    #: two API keys never share an answer.
    CALLER = "caller"
    #: Entries are keyed without a credential: one cache for every key (a
    #: single-user cache, a key that rotates, cassettes imported for CI).
    SHARED = "shared"

    @classmethod
    def names(cls) -> list[str]:
        return [scope.value for scope in cls]


#: Headers that carry a credential, whatever the provider: each one present
#: is fingerprinted, never keyed as it is nor stored. Not only the provider's
#: own: behind one custom ``--upstream`` any of them may be what authenticates,
#: and a Bedrock path with an ``x-api-key`` must not share another key's answers.
CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
)
#: Query parameters that carry a credential (Gemini's ``key=``), whatever the provider.
CREDENTIAL_QUERY_PARAMS = frozenset({"key"})


@frozen
class KeyPolicy:
    """
    Which parts of a request beyond method, path, query and body change the answer.

    Providers hand their own policy to :func:`derive_key`; the default suits the
    OpenAI and Anthropic HTTP APIs.
    """

    varying_headers: frozenset[str] = frozenset({"anthropic-version", "anthropic-beta"})
    #: Every credential header (:data:`CREDENTIAL_HEADERS`), and those
    #: ``--credential-header`` adds.
    credential_headers: tuple[str, ...] = CREDENTIAL_HEADERS
    #: Headers that say which account a call is billed to (an OpenAI organization
    #: or project). They change the answer (an organization's fine-tuned models),
    #: so they are part of the caller's identity, fingerprinted with its
    #: credential: never stored, never exported, and left out of the shared
    #: scope, where a recording replays whoever asks.
    account_headers: frozenset[str] = frozenset({"openai-organization", "openai-project"})
    #: Header name prefixes that change the answer (Bedrock's ``x-amzn-bedrock-``).
    varying_prefixes: tuple[str, ...] = ()
    #: Query parameters that carry a credential: fingerprinted, never part of the key.
    credential_query_params: frozenset[str] = CREDENTIAL_QUERY_PARAMS


DEFAULT_POLICY = KeyPolicy()


@frozen
class ParsedBody:
    """
    A request body read once, for both its key and what is stored beside the answer.

    ``document`` is the parsed JSON (numbers as ``Decimal``), whole, or None
    when the body is hashed raw or too large to hold parsed (over
    :data:`WHOLE_BODY_BYTES`); ``parts`` is what takes part in the key, in
    pieces (see :attr:`normalized`): the document less what ``ignore`` names.
    """

    document: Any
    parts: tuple[bytes, ...]
    #: The rules ``parts`` was made under.
    ignore: tuple[IgnorePath, ...] = ()
    #: What the model is read from: the document, or for a large body the
    #: top-level object's scalar members (numbers as ``Spelled``).
    head: Any = None

    @property
    def normalized(self) -> bytes:
        """What takes part in the key, in one piece (``json:…``, ``raw:…`` or ``empty:``)."""
        return b"".join(self.parts)


@frozen
class KeyRequest:
    """
    The facts of one request that a key may depend on.

    ``headers`` maps lower-case names to their (comma-joined) values; the web
    layer builds it once per request. ``parsed``, when given, is ``body``
    already read by :func:`parse_body` (under ``ignore``), so it is not
    parsed twice.

    ``ignore`` names fields of a JSON body left out of the key (see
    :func:`parse_body`). The rules themselves are not part of the key: a key
    is the meaning of what remains of a request, and a rule only says which
    fields do not change the answer. So a rule that names nothing in a body
    leaves its key as it was (adding ``--ignore metadata.user_id`` to a
    daemon keeps every entry whose body has no such field), and requests
    with and without a rule share an entry when what remains is the same.
    Nor does that let a rule read more than it could without: what remains
    of a body is itself a JSON body, whose key it has when sent as it is.
    The rules are kept beside the entry (:func:`stored_request`), for
    ``stasis show``, the diagnostics and :func:`stored_key`.
    """

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(factory=dict)
    body: bytes = b""
    namespace: str = ""
    parsed: ParsedBody | None = None
    ignore: tuple[IgnorePath, ...] = ()


def parse_json(body: bytes) -> Any:
    """Parse JSON with exact numbers; raises ``ValueError`` for anything else."""
    try:
        return json.loads(body, parse_float=Decimal, parse_int=Decimal, parse_constant=_Constant)
    except InvalidOperation:  # an exponent beyond what Decimal holds (``1e9999999999999999999``)
        raise ValueError("JSON number out of range") from None


def parse_body(body: bytes, ignore: tuple[IgnorePath, ...] = ()) -> ParsedBody:
    """
    Read a request body: its JSON document, and its form in the key (canonical
    JSON of the document less the fields ``ignore`` names, or the raw bytes).

    The two forms carry different prefixes so that no raw body can collide with
    a canonical one. Bodies with duplicate object names, numbers ``Decimal``
    cannot hold, or (once ``ignore`` has dropped its fields) nesting beyond
    :data:`MAX_JSON_DEPTH` are hashed raw, whole: the rules apply to JSON only.

    A body up to :data:`WHOLE_BODY_BYTES` is parsed whole, then spelled; a
    larger one is spelled in a stream (:mod:`stasis.canonical_stream`), to the
    same text, in memory about its own size whatever its shape, and hashed raw
    when it is over that stream's budget (a dense mass of tiny values: more
    than one ``,:[{`` per 12 bytes of a body with more than a million).

    Canonicalising costs ~20 µs a kilobyte of text and ten times that for
    arrays of numbers: the engine reads large bodies off the reactor thread.
    Dropping fields costs nothing when none is named, and one copy of the
    objects and arrays on their paths when some are.
    """
    if not body:
        return ParsedBody(None, (b"empty:",), ignore)
    if len(body) > WHOLE_BODY_BYTES:
        try:
            streamed = canonical_parts(body, ignore)
        except NotCanonical:
            return ParsedBody(None, (b"raw:", body), ignore)
        return ParsedBody(None, (b"json:", *streamed.parts), ignore, streamed.head)
    return _parsed_whole(body, ignore)


def _parsed_whole(body: bytes, ignore: tuple[IgnorePath, ...]) -> ParsedBody:
    """:func:`parse_body` by parsing the whole document (any size: the tests compare)."""
    try:
        value = json.loads(
            body,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=_Constant,
            object_pairs_hook=unique_object,
        )
        out: list[str] = []
        canonical_into(dropped(value, ignore), out, MAX_JSON_DEPTH)
        return ParsedBody(value, (b"json:" + "".join(out).encode("ascii"),), ignore, value)
    except (ValueError, RecursionError, InvalidOperation):
        return ParsedBody(None, (b"raw:", body), ignore)


def normalized_body(body: bytes) -> bytes:
    """The body as it takes part in the key (see :func:`parse_body`)."""
    return parse_body(body).normalized


def normalized_query(query: str, drop: Iterable[str] = ()) -> str:
    """Decode the query and order it by name (values of one name keep their order)."""
    dropped = set(drop)
    pairs = [
        (name, value)
        # surrogateescape: distinct undecodable escapes (%FE, %FF) stay distinct.
        for name, value in parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
        if name not in dropped
    ]
    pairs.sort(key=lambda pair: pair[0])
    return json.dumps(pairs)


def credential_values(
    request: KeyRequest, policy: KeyPolicy = DEFAULT_POLICY
) -> tuple[tuple[str, str], ...]:
    """
    The credentials a request carries, as ``(where, secret)`` pairs.

    A ``Bearer`` token counts by its token alone, so the same key sent as
    ``Authorization: Bearer k`` or ``x-api-key: k`` is the same credential (the
    Anthropic SDKs use either).
    """
    found: set[tuple[str, str]] = set()
    for name in policy.credential_headers:
        value = request.headers.get(name)
        if not value:
            continue
        signed = parse_authorization(value) if name == "authorization" else None
        if signed is not None:
            # Who signed, not the signature: that changes every second.
            found.add(("sigv4", f"{signed.access_key}/{signed.region}"))
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found.add(("token", token.strip()))
        else:
            found.add(("token", value.strip()))
    for name in policy.account_headers:
        value = request.headers.get(name, "").strip()
        if value:
            found.add(("account", f"{name}={value}"))
    if policy.credential_query_params:
        for name, value in parse_qsl(
            request.query, keep_blank_values=True, errors="surrogateescape"
        ):
            if name in policy.credential_query_params and value:
                found.add(("token", value))
    return tuple(sorted(found))


def credential_fingerprint(
    request: KeyRequest, secret: bytes, policy: KeyPolicy = DEFAULT_POLICY
) -> str:
    """An HMAC of the request's credentials, or ``""`` for a request without any."""
    values = credential_values(request, policy)
    if not values:
        return ""
    message = json.dumps(values).encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _chosen_headers(request: KeyRequest, policy: KeyPolicy) -> list[tuple[str, str]]:
    """The headers besides ``Accept`` that change the answer, whitespace normalised, sorted."""
    return sorted(
        (name, " ".join(value.split()))
        for name, value in request.headers.items()
        if name in policy.varying_headers or name.startswith(policy.varying_prefixes)
    )


def _asks_for_stream(request: KeyRequest) -> bool:
    accept = request.headers.get("accept", "").lower()
    return any(media_type in accept for media_type in STREAM_MEDIA_TYPES)


def _varying(request: KeyRequest, policy: KeyPolicy) -> str:
    chosen = _chosen_headers(request, policy)
    if _asks_for_stream(request):
        chosen.append(("accept", "stream"))
    return json.dumps(chosen)


def _parts(request: KeyRequest, policy: KeyPolicy) -> tuple[bytes, tuple[bytes, ...]]:
    """
    What a key is made of, before and after the credential's place in it; the
    part after in pieces, so that a large body's text is hashed, not copied.
    """
    before = (
        KEY_VERSION,
        request.method.upper().encode("ascii", "replace"),
        request.path.encode("utf-8", "surrogatepass"),
        normalized_query(request.query, policy.credential_query_params).encode("ascii"),
        _varying(request, policy).encode("ascii"),
    )
    parsed = request.parsed
    if parsed is None or parsed.ignore != request.ignore:
        parsed = parse_body(request.body, request.ignore)
    size = sum(map(len, parsed.parts))
    namespace = _framed(request.namespace.encode("utf-8", "surrogatepass"))
    return b"".join(map(_framed, before)), (namespace, size.to_bytes(8, "big"), *parsed.parts)


def _framed(part: bytes) -> bytes:
    return len(part).to_bytes(8, "big") + part


def _hashed(parts: tuple[bytes, tuple[bytes, ...]], fingerprint: str) -> str:
    digest = hashlib.sha256(parts[0])
    digest.update(_framed(fingerprint.encode("ascii")))
    for piece in parts[1]:
        digest.update(piece)
    return digest.hexdigest()


def _key(request: KeyRequest, fingerprint: str, policy: KeyPolicy) -> str:
    return _hashed(_parts(request, policy), fingerprint)


def derive_key(request: KeyRequest, secret: bytes, policy: KeyPolicy = DEFAULT_POLICY) -> str:
    """The cache key of ``request`` in its caller's scope: a SHA-256 hex digest."""
    return _key(request, credential_fingerprint(request, secret, policy), policy)


@frozen
class ScopedKeys:
    """
    The keys one request may be answered under, in the order they are tried.

    ``own`` is where an answer to it is stored: the caller's scope (the key
    includes the credential's fingerprint), or the shared scope when the
    daemon or the request has no credential scope of its own. ``shared`` is
    the key without any credential: what entries are exported and imported
    under, so that a recording made with one key replays with another or none.
    """

    own: str
    shared: str
    #: The caller's credential fingerprint ("" for none), to tell which stored
    #: entries are its own (:func:`stored_key`).
    fingerprint: str = ""

    @property
    def tried(self) -> tuple[str, ...]:
        """The keys a lookup tries: the caller's scope first, then the shared one."""
        return (self.own,) if self.own == self.shared else (self.own, self.shared)


def scoped_keys(
    request: KeyRequest,
    secret: bytes,
    policy: KeyPolicy = DEFAULT_POLICY,
    scope: CredentialScope = CredentialScope.CALLER,
) -> ScopedKeys:
    """``request``'s keys in its caller's scope and in the shared one (one hash each)."""
    parts = _parts(request, policy)
    shared = _hashed(parts, "")
    if scope is CredentialScope.SHARED:
        return ScopedKeys(shared, shared)
    fingerprint = credential_fingerprint(request, secret, policy)
    own = _hashed(parts, fingerprint) if fingerprint else shared
    return ScopedKeys(own, shared, fingerprint)


def stored_key(
    method: str,
    path: str,
    namespace: str,
    stored: StoredRequest,
    fingerprint: str,
    policy: KeyPolicy = DEFAULT_POLICY,
) -> str:
    """
    The key a stored request has under the credential ``fingerprint``: equal
    to an entry's key exactly when the entry was stored by that credential.

    What is stored of a request is everything its key was made of but the
    credential (its ignore rules too), so the key can be made again with a
    credential that is not stored, proving whose an entry is without keeping
    anything that says so. A stored rule that does not parse is a
    ``ValueError``.
    """
    request = KeyRequest(
        method=method,
        path=path,
        query=stored.query,
        headers=dict(stored.headers),
        body=stored.body,
        namespace=namespace,
        ignore=tuple(parse_ignore(text) for text in stored.ignored),
    )
    return _key(request, fingerprint, policy)


def stored_request(request: KeyRequest, policy: KeyPolicy = DEFAULT_POLICY) -> StoredRequest:
    """
    What is kept of ``request`` beside its answer: everything its key was made
    of except the credential (and the method, path and namespace, which the
    entry keeps itself).

    A query parameter that carries a credential (Gemini's ``key=``) is
    removed, the other parameters kept in their order; headers are only those
    that take part in the key, so no ``Authorization`` can be among them. The
    body is kept whole, with the texts of the ignore rules that were applied
    to it.
    """
    headers = _chosen_headers(request, policy)
    if _asks_for_stream(request):
        headers.append(("accept", " ".join(request.headers["accept"].split())))
    query = request.query
    if policy.credential_query_params:
        pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
        kept = [
            (name, value) for name, value in pairs if name not in policy.credential_query_params
        ]
        if len(kept) != len(pairs):
            query = urlencode(kept, quote_via=quote, errors="surrogateescape")
    return StoredRequest(
        query=query,
        headers=tuple(headers),
        body=request.body,
        ignored=tuple(rule.text for rule in request.ignore),
    )
