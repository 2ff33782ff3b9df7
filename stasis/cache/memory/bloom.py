"""
The bits of the key filter: a Bloom filter of cache keys.

It never says "not there" of a key it was given, so it cannot turn a hit into
a miss; keys deleted since only cost a lookup that finds nothing.

Cache keys are HMAC-SHA256 digests, uniformly random already, so the filter
takes its probe positions straight from the key's bits instead of hashing.
"""

from __future__ import annotations

__all__ = ["KeyBloom"]

#: Probe positions per key; with 16 bits per expected key, ~0.25% false "maybe".
PROBES = 4
BITS_PER_KEY = 16
#: The least filter (1 MiB): a new database grows to ~800,000 entries before
#: its false-"maybe" rate passes 1%, and past that it only costs more lookups.
MIN_BITS = 1 << 23
#: Probe positions are 32-bit slices of the key.
MAX_BITS = 1 << 32


class KeyBloom:
    """A Bloom filter of cache keys, sized for ``expected`` keys."""

    def __init__(self, expected: int = 0) -> None:
        wanted = max(MIN_BITS, expected * BITS_PER_KEY)
        bits = min(MAX_BITS, 1 << (wanted - 1).bit_length())
        self._mask = bits - 1
        self._bits = bytearray(bits // 8)

    @property
    def size_bytes(self) -> int:
        return len(self._bits)

    def _set(self, number: int) -> None:
        bits, mask = self._bits, self._mask
        for _ in range(PROBES):
            position = number & mask
            bits[position >> 3] |= 1 << (position & 7)
            number >>= 32

    def add(self, key: str) -> None:
        """Remember ``key`` (a cache key: 64 hex digits)."""
        self._set(int(key[:32], 16))

    def add_digest(self, digest: bytes) -> None:
        """Remember a key as the database stores it (its 32 raw bytes)."""
        self._set(int.from_bytes(digest[:16], "big"))

    def might_hold(self, key: str) -> bool:
        """False only if ``key`` was certainly never added."""
        number = int(key[:32], 16)
        bits, mask = self._bits, self._mask
        for _ in range(PROBES):
            position = number & mask
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
            number >>= 32
        return True
