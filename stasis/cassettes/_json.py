"""
JSON inside an entry (a body, an event's data) shown as JSON, yet given back byte for byte.

A hit must replay the very bytes that were recorded, so a body is shown as
JSON only when one of a few serializer styles, applied to what it parses to,
rebuilds it exactly; the style is written beside it. The styles are the ones
LLM APIs and their SDKs write (compact, Python's default, two-space indent),
each with non-ASCII escaped or not and with or without a final newline.

Values stay plain ``json`` values (floats, not ``Decimal``), so a document
survives any JSON library: a float's shortest ``repr`` reads back as the same
float, and a body whose numbers a float cannot hold (``1e400``, ``0.10``) is
simply not rebuilt by any style, and is shown another way.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal, cast

from attrs import frozen

__all__ = ["DEFAULT_STYLE", "JsonStyle", "exact_json", "loose_json", "parse_style"]

Layout = Literal["compact", "spaced", "indent2"]

#: JSON nested deeper than this is shown another way: the document that holds
#: it must still be readable by any JSON library (Python's stops near 1000).
MAX_DEPTH = 200

#: Integers of more digits than this are not written (Python refuses past 4300).
_MAX_DIGITS = 4000

_SEPARATORS: dict[str, tuple[str, str]] = {
    "compact": (",", ":"),
    "spaced": (", ", ": "),
    "indent2": (",", ": "),
}


@frozen
class JsonStyle:
    """How a JSON value was written: its layout, its escaping, a final newline."""

    layout: Layout = "compact"
    ascii: bool = False
    newline: bool = False

    @property
    def name(self) -> str:
        """``compact``, ``indent2+ascii``, ``spaced+ascii+newline``..."""
        flags = [flag for flag, on in (("ascii", self.ascii), ("newline", self.newline)) if on]
        return "+".join([self.layout, *flags])

    def render(self, value: Any) -> bytes:
        """``value`` written in this style; ValueError if it cannot be (NaN, a lone surrogate)."""
        text = _encoder(self.layout, self.ascii).encode(value)
        return text.encode("utf-8") + (b"\n" if self.newline else b"")


@functools.cache
def _encoder(layout: Layout, ascii: bool) -> json.JSONEncoder:
    """One encoder per style, made once: ``json.dumps`` with options makes one per call."""
    return json.JSONEncoder(
        ensure_ascii=ascii,
        allow_nan=False,
        indent=2 if layout == "indent2" else None,
        separators=_SEPARATORS[layout],
    )


#: The style a document's JSON is in when it names none: what APIs write most.
DEFAULT_STYLE = JsonStyle()


def parse_style(name: str) -> JsonStyle | None:
    """The style ``name`` names, or None when it names none."""
    layout, *flags = name.split("+")
    if layout not in _SEPARATORS or len(set(flags)) != len(flags):
        return None
    if not set(flags) <= {"ascii", "newline"}:
        return None
    return JsonStyle(cast(Layout, layout), "ascii" in flags, "newline" in flags)


def _candidates(raw: bytes) -> Iterator[JsonStyle]:
    """The styles that could have written ``raw``, the plainest first."""
    newline = raw.endswith(b"\n")
    core = raw[:-1] if newline else raw
    # compact and spaced never write a newline (strings escape theirs).
    layouts: tuple[Layout, ...] = ("compact", "spaced", "indent2")
    if b"\n" in core:
        layouts = ("indent2",)
    for layout in layouts:
        for escaped in (False, True) if raw.isascii() else (False,):
            yield JsonStyle(layout, escaped, newline)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def _depth_at_most(value: Any, limit: int) -> bool:
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return True


def _parse(raw: bytes, **hooks: Any) -> Any:
    """``raw`` as JSON, or a ValueError: not UTF-8, not JSON, too deep."""
    if raw[:1] not in b'{["-0123456789tfn' or not raw[:1]:
        raise ValueError("not JSON")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, **hooks) if hooks else _decode(text)
    except RecursionError as error:
        raise ValueError("nested too deep") from error
    # Nesting needs brackets: only a body with that many can be too deep.
    opened = raw.count(b"[") + raw.count(b"{")
    if opened > MAX_DEPTH and not _depth_at_most(value, MAX_DEPTH):
        raise ValueError("nested too deep")
    return value


def exact_json(raw: bytes) -> tuple[Any, JsonStyle] | None:
    """What ``raw`` parses to and the style that rebuilds it exactly, or None."""
    try:
        value = _parse(raw)
    except ValueError:
        return None
    for style in _candidates(raw):
        try:
            if style.render(value) == raw:
                return value, style
        except (ValueError, RecursionError):
            continue
    return None


def _plain_number(number: Decimal) -> float | int:
    """``number`` as a float when one holds it exactly, else as an int when it is whole."""
    if number.is_finite():
        as_float = float(number)
        if math.isfinite(as_float) and Decimal(repr(as_float)) == number:
            return as_float
        if number == number.to_integral_value() and number.adjusted() < _MAX_DIGITS:
            return int(number)
    raise ValueError(f"{number} is held by neither a float nor an int")


def loose_json(raw: bytes) -> tuple[Any, JsonStyle | None] | None:
    """
    What ``raw`` parses to, numbers exact in value, and the style that rebuilds it if one does.

    For a request body, which is kept to be read, not replayed: shown as JSON
    even when no style rebuilds its bytes, written back in the default style.
    A number neither a float nor an int holds exactly (``0.1000000000000000000001``)
    makes it None: it could not be shown without changing its value.
    """
    exact = exact_json(raw)
    if exact is not None:
        return exact
    try:
        value = _parse(raw, parse_float=lambda text: _plain_number(Decimal(text)))
        DEFAULT_STYLE.render(value)
    except (ValueError, RecursionError):
        return None
    return value, None
