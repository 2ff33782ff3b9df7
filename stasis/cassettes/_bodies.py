"""
A byte string (a body, an event's payload) as the fields of a document, and back.

Three ways, tried in order: as JSON, when :mod:`~stasis.cassettes._json`
rebuilds it exactly (``body``, with ``body_style`` unless it is the default);
as text, when it is UTF-8 (``body_text``); else as base64 (``body_base64``).
An empty one has no field at all. The same three, under other names, serve a
response body, a request body and an AWS event's payload.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from stasis.cassettes._fields import Fields
from stasis.cassettes._json import DEFAULT_STYLE, JsonStyle, exact_json, loose_json, parse_style

__all__ = ["bytes_fields", "encoded", "read_base64", "read_bytes", "read_style", "style_fields"]


def style_fields(name: str, style: JsonStyle | None) -> dict[str, Any]:
    """``{name: style}``, or nothing for the default style."""
    return {} if style is None or style == DEFAULT_STYLE else {name: style.name}


def bytes_fields(raw: bytes, name: str, *, loose: bool = False) -> dict[str, Any]:
    """
    ``raw`` as fields named after ``name``: ``name`` (+ ``name_style``), ``name_text`` or
    ``name_base64``. ``loose`` (request bodies) shows JSON even when no style
    rebuilds its bytes: importing it writes the default style.
    """
    if not raw:
        return {}
    found = loose_json(raw) if loose else exact_json(raw)
    if found is not None:
        value, style = found
        return {name: value, **style_fields(f"{name}_style", style)}
    try:
        return {f"{name}_text": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(raw).decode("ascii")}


def read_style(fields: Fields, name: str) -> JsonStyle:
    spelled = fields.optional_text(name)
    if spelled is None:
        return DEFAULT_STYLE
    style = parse_style(spelled)
    if style is None:
        raise fields.error(name, f"not a JSON style: {spelled!r}")
    return style


def encoded(fields: Fields, name: str) -> bytes:
    """The string ``name`` as UTF-8 (a lone surrogate is no text)."""
    try:
        return fields.text(name).encode("utf-8")
    except UnicodeEncodeError as error:
        raise fields.error(name, "not text: it holds a lone surrogate") from error


def read_base64(fields: Fields, name: str) -> bytes:
    try:
        return base64.b64decode(fields.text(name), validate=True)
    except (binascii.Error, ValueError) as error:
        raise fields.error(name, f"not base64 ({error})") from error


def read_bytes(fields: Fields, name: str) -> bytes:
    """The byte string :func:`bytes_fields` wrote under ``name``."""
    given = [f for f in (name, f"{name}_text", f"{name}_base64") if fields.has(f)]
    if len(given) > 1:
        raise fields.error(given[1], f"only one of {', '.join(given)} may be given")
    if fields.has(name):
        style = read_style(fields, f"{name}_style")
        try:
            return style.render(fields.value(name))
        except (ValueError, RecursionError) as error:
            raise fields.error(name, f"cannot be written as JSON ({error})") from error
    if fields.has(f"{name}_style"):
        raise fields.error(f"{name}_style", f"given without {name}")
    if fields.has(f"{name}_text"):
        return encoded(fields, f"{name}_text")
    if fields.has(f"{name}_base64"):
        return read_base64(fields, f"{name}_base64")
    return b""
