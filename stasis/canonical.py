"""
The canonical spelling of JSON: one text for every JSON value that means the same thing.

Keys are made of it (:mod:`stasis.keys`), so it must never move: objects'
members sorted by name, no whitespace, strings as ``json.dumps`` quotes them
(ASCII, ``\\uXXXX`` escapes), numbers as their exact decimal value
(``1``, ``1.0`` and ``10e-1`` are ``1e0``), ``NaN`` and ``Infinity`` as
written. :func:`canonical_json` spells a parsed document;
:mod:`stasis.canonical_stream` spells a large body straight from its bytes,
with these same functions, to the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from json.encoder import encode_basestring_ascii
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "Constant",
    "Spelled",
    "TooDeep",
    "canonical_into",
    "canonical_json",
    "canonical_number",
    "number_spelling",
    "quoted",
    "unique_object",
]

#: JSON bodies nesting arrays and objects deeper than this are hashed raw: a fixed
#: bound, so that the key never depends on how deep the caller's stack happens to be.
MAX_JSON_DEPTH = 128


class Constant(str):
    """A JSON ``NaN``/``Infinity`` literal, kept apart from the string of that name."""


class TooDeep(ValueError):
    """A JSON value nests deeper than :data:`MAX_JSON_DEPTH`."""


def canonical_number(value: Decimal) -> str:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN/Infinity cannot come from json's number grammar
        return str(value)
    trimmed = list(digits)
    while len(trimmed) > 1 and trimmed[0] == 0:
        trimmed.pop(0)
    if trimmed == [0]:
        return "0"
    while trimmed[-1] == 0:
        trimmed.pop()
        exponent += 1
    return f"{'-' if sign else ''}{''.join(map(str, trimmed))}e{exponent}"


def number_spelling(text: str) -> str:
    """
    ``canonical_number(Decimal(text))`` for a JSON number literal (as json's
    grammar has it: no leading zero, digits after a point), from its text: the
    same spelling at a fraction of the cost (no tuple of digits, no ``Decimal``
    unless the exponent is near what one holds). ``ValueError`` for an
    exponent beyond that, which ``Decimal`` refuses.
    """
    negative = text[0] == "-"
    digits = text[1:] if negative else text
    if digits.isdigit():  # an integer
        if digits == "0":
            return "0"
        kept = digits.rstrip("0")
        return f"{'-' if negative else ''}{kept}e{len(digits) - len(kept)}"
    if "e" not in digits and "E" not in digits:  # a decimal fraction (as floats' repr has)
        whole, _, fraction = digits.partition(".")
        significant = (whole + fraction).lstrip("0")
        if not significant:
            return "0"
        kept = significant.rstrip("0")
        power = len(significant) - len(kept) - len(fraction)
        return f"{'-' if negative else ''}{kept}e{power}"
    mantissa, marked, exponent = digits.partition("e")
    if not marked:
        mantissa, _, exponent = digits.partition("E")
    if len(exponent.lstrip("+-")) > 17:
        try:
            Decimal(text)
        except InvalidOperation:  # an ArithmeticError, not a ValueError
            raise ValueError("JSON number out of range") from None
    whole, _, fraction = mantissa.partition(".")
    significant = (whole + fraction).lstrip("0")
    if not significant:
        return "0"
    kept = significant.rstrip("0")
    power = (int(exponent) if exponent else 0) - len(fraction) + len(significant) - len(kept)
    return f"{'-' if negative else ''}{kept}e{power}"


class Spelled:
    """
    A number already spelled canonically (:func:`number_spelling`): what a
    parse that only needs the canonical text reads numbers as.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook refusing duplicate names, whose meaning differs between parsers."""
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate name in a JSON object")
    return value


#: ``json.dumps`` of a string, without the encoder set up around it per call.
quoted: Callable[[str], str] = encode_basestring_ascii


def canonical_into(value: Any, out: list[str], room: int | None = None) -> None:
    # room: how many more arrays/objects may open (None: no limit).
    if room is not None and isinstance(value, (dict, list)):
        if room == 0:
            raise TooDeep
        room -= 1
    if isinstance(value, dict):
        out.append("{")
        for i, name in enumerate(sorted(value)):
            if i:
                out.append(",")
            out.append(quoted(name))
            out.append(":")
            canonical_into(value[name], out, room)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            canonical_into(item, out, room)
        out.append("]")
    elif isinstance(value, Constant):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(quoted(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, Decimal):
        out.append(canonical_number(value))
    elif type(value) is Spelled:
        out.append(value.text)
    else:  # pragma: no cover - json.loads produces nothing else with our hooks
        raise TypeError(f"unexpected JSON value {value!r}")


def canonical_json(value: Any) -> str:
    """
    One spelling for every JSON value that means the same thing.

    ``value`` must come from :func:`parse_json` (numbers as ``Decimal``).
    """
    out: list[str] = []
    canonical_into(value, out)
    return "".join(out)
