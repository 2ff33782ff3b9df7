"""
One server-sent event as a document, readable, and rebuilt byte for byte.

An event of the usual shape (an optional ``event:`` line, then ``data:``
lines, all ending alike) is shown by its parts: ``{"event": "message_start",
"data": {...}}``, its data as JSON when a style rebuilds it, else as text
(``"text": "[DONE]"``); ``eol`` names line ends other than LF. Any other event
(a comment, an ``id:``, a line without the space after the colon) is shown
whole as ``raw`` text, or as ``base64`` when it is not UTF-8: every event comes
back exactly as it was recorded.
"""

from __future__ import annotations

import base64
from typing import Any

from stasis.cassettes._bodies import encoded, read_base64, read_style, style_fields
from stasis.cassettes._fields import Fields
from stasis.cassettes._json import exact_json

__all__ = ["read_sse_event", "sse_event_fields"]

#: Line ends by their name in a document; LF, what providers send, has none.
_EOL_NAMES = {"\r\n": "crlf", "\r": "cr"}
_EOLS = {name: eol for eol, name in _EOL_NAMES.items()}

_EVENT, _DATA = "event: ", "data: "


def _render(name: str | None, data: str, eol: str) -> str:
    head = f"{_EVENT}{name}{eol}" if name is not None else ""
    return head + "".join(f"{_DATA}{line}{eol}" for line in data.split("\n")) + eol


def _parts(text: str) -> tuple[str | None, str, str] | None:
    """The name, data and line end of an event of the usual shape, else None."""
    for eol in ("\r\n", "\n", "\r"):
        if text.endswith(eol + eol):
            break
    else:
        return None
    lines = text[: -2 * len(eol)].split(eol)
    name = lines.pop(0)[len(_EVENT) :] if lines[0].startswith(_EVENT) else None
    if not lines or not all(line.startswith(_DATA) for line in lines):
        return None
    data = "\n".join(line[len(_DATA) :] for line in lines)
    return (name, data, eol) if _render(name, data, eol) == text else None


def sse_event_fields(raw: bytes) -> dict[str, Any]:
    """One event (as :class:`~stasis.streams.framing.SSESplitter` cut it) as document fields."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}
    parts = _parts(text)
    if parts is None:
        return {"raw": text}
    name, data, eol = parts
    fields: dict[str, Any] = {} if name is None else {"event": name}
    found = exact_json(data.encode("utf-8"))
    if found is None:
        fields["text"] = data
    else:
        fields["data"] = found[0]
        fields.update(style_fields("style", found[1]))
    if eol in _EOL_NAMES:
        fields["eol"] = _EOL_NAMES[eol]
    return fields


def read_sse_event(fields: Fields) -> bytes:
    """The event :func:`sse_event_fields` described."""
    given = [name for name in ("data", "text", "raw", "base64") if fields.has(name)]
    if len(given) != 1:
        problem = "more than one of" if given else "none of"
        raise fields.error(given[-1] if given else "data", f"{problem} data, text, raw, base64")
    if given == ["raw"]:
        return encoded(fields, "raw")
    if given == ["base64"]:
        return read_base64(fields, "base64")
    name = fields.optional_text("event")
    eol_name = fields.optional_text("eol")
    if eol_name is not None and eol_name not in _EOLS:
        raise fields.error("eol", f"expected one of {', '.join(_EOLS)}, got {eol_name!r}")
    eol = "\n" if eol_name is None else _EOLS[eol_name]
    if given == ["text"]:
        data = fields.text("text")
    else:
        style = read_style(fields, "style")
        try:
            data = style.render(fields.value("data")).decode("utf-8")
        except (ValueError, RecursionError) as error:
            raise fields.error("data", f"cannot be written as JSON ({error})") from error
    try:
        return _render(name, data, eol).encode("utf-8")
    except UnicodeEncodeError as error:
        raise fields.error(given[0], "not text: it holds a lone surrogate") from error
