"""
The AWS event stream wire format (``application/vnd.amazon.eventstream``), for fakes and tests.

One message is::

    total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes
    headers | payload | CRC32 of everything before it

and one header is ``name length (uint8) | name | type (uint8) | value``; only
type 7 (a UTF-8 string, ``uint16`` length then bytes) is written here, which is
all Bedrock's stream events use. Every integer is big-endian. Round-trips
through botocore's own decoder (``botocore.eventstream.EventStreamBuffer``).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["decode_messages", "encode_event", "encode_message"]

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")


def _crc32(data: bytes, crc: int = 0) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def _encode_headers(headers: Sequence[tuple[str, str]]) -> bytes:
    out = bytearray()
    for name, value in headers:
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: Sequence[tuple[str, str]], payload: bytes) -> bytes:
    """One event stream message with string ``headers`` (in order) and ``payload``."""
    encoded = _encode_headers(headers)
    total = _PRELUDE.size + _CRC.size + len(encoded) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(encoded))
    head = prelude + _CRC.pack(_crc32(prelude)) + encoded + payload
    return head + _CRC.pack(_crc32(head))


def encode_event(event_type: str, payload: Any) -> bytes:
    """An ``event`` message of type ``event_type`` whose payload is ``payload`` as JSON."""
    return encode_message(
        [
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        json.dumps(payload, separators=(",", ":")).encode(),
    )


def decode_messages(data: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    """
    ``(headers, payload)`` of each whole message in ``data``, checking both CRCs.

    A trailing partial message is an error: this is for bodies that ended.
    """
    offset = 0
    while offset < len(data):
        if len(data) - offset < 12:
            raise ValueError(f"truncated prelude at offset {offset}")
        total, headers_length = _PRELUDE.unpack_from(data, offset)
        (prelude_crc,) = _CRC.unpack_from(data, offset + 8)
        if prelude_crc != _crc32(data[offset : offset + 8]):
            raise ValueError(f"prelude CRC mismatch at offset {offset}")
        if total < 16 or offset + total > len(data):
            raise ValueError(f"truncated message at offset {offset}")
        message = data[offset : offset + total]
        (message_crc,) = _CRC.unpack_from(message, total - 4)
        if message_crc != _crc32(message[:-4]):
            raise ValueError(f"message CRC mismatch at offset {offset}")
        headers: dict[str, str] = {}
        position, end = 12, 12 + headers_length
        while position < end:
            name_length = message[position]
            name = message[position + 1 : position + 1 + name_length].decode()
            position += 1 + name_length
            kind = message[position]
            if kind != _STRING:
                raise ValueError(f"header {name!r} has type {kind}, only strings are supported")
            (value_length,) = struct.unpack_from(">H", message, position + 1)
            headers[name] = message[position + 3 : position + 3 + value_length].decode()
            position += 3 + value_length
        yield headers, message[end : total - 4]
        offset += total
