"""
A streamed event's meaning: its name and its (JSON) data, whatever the format.

Providers look at events only to know when a stream is complete and how many
tokens it cost; the bytes themselves are recorded and replayed untouched.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from typing import Any

from attrs import frozen

from stasis.streams.eventstream import decode_message

__all__ = ["StreamEvent", "decode_eventstream", "decode_sse"]


@frozen
class StreamEvent:
    #: The SSE ``event:`` field or the AWS ``:event-type`` header; None when absent.
    name: str | None
    #: The data parsed as JSON when it is JSON, else the text (``"[DONE]"``).
    data: Any

    @property
    def kind(self) -> str | None:
        """The event's type: its data's ``"type"`` field (OpenAI, Anthropic), else its name."""
        if isinstance(self.data, dict) and isinstance(self.data.get("type"), str):
            return str(self.data["type"])
        return self.name


def _json_or_text(text: str) -> Any:
    try:
        # strict=False: a control character left unescaped inside a string (a
        # raw \v or \f from a sloppy server) must not cost the event its usage;
        # the bytes are relayed and replayed as they came either way.
        return json.loads(text, strict=False)
    except ValueError:
        return text


#: SSE lines end at CRLF, LF or CR and nowhere else (WHATWG HTML, "Parsing an
#: event stream"): str.splitlines() would also split at U+2028, U+0085, \v,
#: \f..., which JSON carries unescaped inside strings.
_SSE_LINE_END = re.compile(r"\r\n?|\n")


def decode_sse(raw: bytes) -> StreamEvent:
    """
    Decode one server-sent event (as :class:`~stasis.streams.framing.SSESplitter` cut it).

    The WHATWG parsing rules: a line starting with ``:`` is a comment; a line
    with no colon is a field name with an empty value; one space after the
    colon is dropped; ``data`` lines are joined with LF; ``id``, ``retry`` and
    unknown fields do not matter here.
    """
    text = raw.decode("utf-8", "replace")
    # What every provider sends, split at C speed; the pattern only when a CR is there.
    lines = _SSE_LINE_END.split(text) if "\r" in text else text.split("\n")
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if not line or line[0] == ":":
            continue
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return StreamEvent(name=name, data=_json_or_text("\n".join(data)))


def decode_eventstream(raw: bytes) -> StreamEvent | None:
    """
    Decode one AWS event stream message (see :func:`~stasis.streams.eventstream.decode_message`).

    Bedrock's ``invoke-with-response-stream`` wraps the model's own events as
    base64 in ``{"bytes": …}``; they are unwrapped here.
    """
    message = decode_message(raw)
    if message is None:
        return None
    headers, payload = message
    name = headers.get(":event-type") or headers.get(":exception-type")
    data = _json_or_text(payload.decode("utf-8", "replace"))
    if isinstance(data, dict) and isinstance(data.get("bytes"), str):
        with contextlib.suppress(ValueError):
            data = _json_or_text(base64.b64decode(data["bytes"]).decode("utf-8", "replace"))
    return StreamEvent(name=name if isinstance(name, str) else None, data=data)
