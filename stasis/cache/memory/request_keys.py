"""
Requests seen recently, by their exact bytes, and the cache key each resolved to.

Most repeated LLM calls repeat their bytes exactly: SDKs serialise the same
call the same way, headers and all. Hashing those bytes costs far less than
parsing the headers, canonicalising the JSON body and deriving the key, so a
repeat is recognised by a keyed hash of the whole request (method, target,
every header but Content-Length in the order sent, body) and answered from
the hot entries straight away. The hash is keyed with the database secret, so
not even memory holds a plain hash of a credential. A request that differs in
any byte, even in a header that cannot change the key, simply takes the full
path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from stasis.model import Change, ChangeKind

__all__ = ["RequestKeys"]


class RequestKeys:
    """A bounded map from request fingerprints to cache keys (oldest forgotten first)."""

    def __init__(self, secret: bytes, size: int = 8192) -> None:
        key = hashlib.sha256(b"stasis recent requests" + secret).digest()
        #: The keyed hash's state after its key block (a secret first block),
        #: copied for each request. SHA-256, for the CPUs' SHA extensions: half
        #: the time of BLAKE2b over a request here. A prefix key is enough, as
        #: no fingerprint ever leaves the process (length extension needs one).
        self._keyed = hashlib.sha256(key + key)
        self._size = size
        self._keys: dict[bytes, str] = {}

    def fingerprint(
        self,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, Sequence[bytes]]],
        body: bytes,
    ) -> bytes:
        """
        ``headers`` as twisted.web keeps them, each name once with its values:
        the same request sent again gives the same bytes here.
        """
        parts = [method, b" ", target, b"\n"]
        for name, values in headers:
            if name != b"Content-Length":
                parts += (name, b":", b"\x00".join(values), b"\n")
        parts.append(b"\n")
        digest = self._keyed.copy()
        digest.update(b"".join(parts))
        digest.update(body)
        return digest.digest()

    def key_of(self, fingerprint: bytes) -> str | None:
        return self._keys.get(fingerprint)

    def remember(self, fingerprint: bytes, key: str) -> None:
        if fingerprint not in self._keys and len(self._keys) >= self._size:
            del self._keys[next(iter(self._keys))]
        self._keys[fingerprint] = key

    def on_change(self, change: Change) -> None:
        # A fingerprint leads to a key, and every hit through it is checked
        # against the hot entries, which follow each key; only a lost feed
        # is a reason to start over.
        if change.kind is ChangeKind.RESET:
            self._keys.clear()
