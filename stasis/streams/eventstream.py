"""
Reading and writing AWS event stream messages (``application/vnd.amazon.eventstream``).

stasis relays and replays recorded frames untouched, and reads them with
botocore's parser; it writes one only when a cassette gives a frame as its
headers and payload, so that Bedrock streams read as events in a diff. A
frame is rebuilt byte for byte only if it was written the way this module
writes it, so the cassette checks each one and keeps any other as raw bytes.

One message is::

    total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes
    headers | payload | CRC32 of everything before it

and one header is ``name length (uint8) | name | type (uint8) | value``.
Every integer is big-endian.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

__all__ = ["HeaderValue", "decode_message", "encode_message"]

#: What a header value may be here: a string (type 7), bytes (type 6), or a
#: boolean (types 0 and 1). The integer and timestamp types are not written:
#: botocore reads them all as ``int``, which does not say which width was sent.
HeaderValue = str | bytes | bool

_TRUE, _FALSE, _BYTES, _STRING = 0, 1, 6, 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_LENGTH = struct.Struct(">H")


def decode_message(raw: bytes) -> tuple[dict[str, object], bytes] | None:
    """
    The headers and payload of the one message ``raw`` is, read by botocore's
    parser (which checks both CRCs); None for anything else, or without
    botocore (the ``stasis[bedrock]`` extra): events are then only recorded.
    """
    try:
        from botocore.eventstream import EventStreamBuffer
    except ImportError:  # pragma: no cover - botocore comes with the bedrock extra
        return None
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    try:
        message = next(iter(buffer))
    except Exception:  # a CRC mismatch, a cut-off frame: botocore's own exceptions
        return None
    return dict(message.headers), bytes(message.payload)


def _crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) < 256:
        raise ValueError(f"an event stream header name is 1 to 255 bytes, not {len(raw_name)}")
    head = bytes([len(raw_name)]) + raw_name
    if isinstance(value, bool):
        return head + bytes([_TRUE if value else _FALSE])
    raw, kind = (value.encode("utf-8"), _STRING) if isinstance(value, str) else (value, _BYTES)
    if len(raw) > 0xFFFF:
        raise ValueError(f"the value of event stream header {name!r} is over 65535 bytes")
    return head + bytes([kind]) + _LENGTH.pack(len(raw)) + raw


def encode_message(headers: Sequence[tuple[str, HeaderValue]], payload: bytes) -> bytes:
    """One event stream message with ``headers`` (in this order) and ``payload``."""
    encoded = b"".join(_header(name, value) for name, value in headers)
    total = _PRELUDE.size + _CRC.size + len(encoded) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(encoded))
    head = prelude + _CRC.pack(_crc32(prelude)) + encoded + payload
    return head + _CRC.pack(_crc32(head))
