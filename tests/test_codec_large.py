"""
Large values in the store's codec: deflated fast (level 1 beyond 1 MiB, see
``SMALLEST_OUTPUT_BYTES``), read back exactly, as every value always was.
"""

from __future__ import annotations

import random

import pytest

from stasis.model import StoredRequest
from stasis.store._codec import (
    SMALLEST_OUTPUT_BYTES,
    decode,
    decode_request,
    encode,
    encode_request,
)

HEADERS = ((b"content-type", b"application/json"),)


def _text(size: int) -> bytes:
    rnd = random.Random(size)
    words = [b"the", b"cache", b"answer", b"caf\xc3\xa9", b"\x00", b'"', b"\xff"]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    return bytes(out[:size])


@pytest.mark.parametrize(
    "size", [0, 1000, SMALLEST_OUTPUT_BYTES - 100, SMALLEST_OUTPUT_BYTES + 1, 5_000_000]
)
def test_values_of_every_size_read_back_exactly(size: int) -> None:
    body = _text(size)
    assert decode(encode(HEADERS, body), b"") == (HEADERS, body)
    request = StoredRequest(query="a=1", headers=(("accept", "text/event-stream"),), body=body)
    assert decode_request(encode_request(request)) == request


def test_a_large_value_is_still_compressed() -> None:
    body = _text(5_000_000)
    assert len(encode(HEADERS, body)) < len(body) / 2
