"""
One AWS event stream message as a document, readable, and rebuilt byte for byte.

A message is shown as its string headers and its payload (JSON, text or
base64, as any body). Bedrock wraps each model event as base64 JSON in
``{"bytes": ...}``: that is shown decoded, with ``bytes_style`` saying how it
was written. The message is rebuilt with :mod:`stasis.streams.eventstream`
(CRCs included) and kept only if that gives back its very bytes; any other
message (a header of another type, a CRC that does not match, a cut-off
tail) is kept whole as ``frame_base64``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from stasis.cassettes._bodies import bytes_fields, read_base64, read_bytes, read_style
from stasis.cassettes._fields import Fields
from stasis.cassettes._json import exact_json
from stasis.streams.eventstream import decode_message, encode_message

__all__ = ["frame_fields", "read_frame"]


def _decoded(raw: bytes) -> tuple[list[tuple[str, str]], bytes] | None:
    """The string headers and the payload of the one message ``raw`` is."""
    message = decode_message(raw)
    if message is None:
        return None
    headers, payload = message
    pairs = list(headers.items())
    if not all(isinstance(value, str) for _, value in pairs):
        return None
    return [(name, str(value)) for name, value in pairs], payload


def _unwrapped(payload: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """A Bedrock payload with its base64 ``bytes`` shown as JSON, and their style."""
    wrapped = payload.get("bytes")
    if not isinstance(wrapped, str):
        return None
    try:
        inner = base64.b64decode(wrapped, validate=True)
    except (binascii.Error, ValueError):
        return None
    found = exact_json(inner)
    if found is None or base64.b64encode(inner).decode("ascii") != wrapped:
        return None
    return {**payload, "bytes": found[0]}, found[1].name


def frame_fields(raw: bytes) -> dict[str, Any]:
    """One message (as :class:`~stasis.streams.framing.EventStreamSplitter` cut it) as fields."""
    decoded = _decoded(raw)
    if decoded is None or encode_message(*decoded) != raw:
        return {"frame_base64": base64.b64encode(raw).decode("ascii")}
    headers, payload = decoded
    fields: dict[str, Any] = {"headers": dict(headers), **bytes_fields(payload, "payload")}
    value = fields.get("payload")
    if isinstance(value, dict) and (unwrapped := _unwrapped(value)) is not None:
        fields["payload"], fields["bytes_style"] = unwrapped
    return fields


def _payload(fields: Fields) -> bytes:
    if not fields.has("bytes_style"):
        return read_bytes(fields, "payload")
    inner_style = read_style(fields, "bytes_style")
    outer_style = read_style(fields, "payload_style")
    payload = fields.value("payload")
    if not isinstance(payload, dict) or "bytes" not in payload:
        raise fields.error("payload", "with bytes_style, expected an object with a bytes field")
    try:
        inner = inner_style.render(payload["bytes"])
        wrapped = {**payload, "bytes": base64.b64encode(inner).decode("ascii")}
        return outer_style.render(wrapped)
    except (ValueError, RecursionError) as error:
        raise fields.error("payload", f"cannot be written as JSON ({error})") from error


def read_frame(fields: Fields) -> bytes:
    """The message :func:`frame_fields` described."""
    if fields.has("frame_base64"):
        return read_base64(fields, "frame_base64")
    headers = fields.object("headers")
    pairs = [(name, headers.text(name)) for name in headers.values]
    headers.done()
    try:
        return encode_message(pairs, _payload(fields))
    except ValueError as error:
        raise fields.error("headers", str(error)) from error
