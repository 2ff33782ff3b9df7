"""
The canonical JSON of a large request body, written in one pass over its bytes.

:func:`stasis.keys.parse_body` spells a small body the obvious way: it parses
a whole document (numbers as ``Decimal``), then walks it into a list of small
strings. That holds a hundred bytes or more of Python objects per value in the
body: a 60 MB array of ``1`` took 6.1 GB and a minute. Here the same text,
byte for byte, is written straight from the body: each scalar is spelled as
it is read and written into pieces of about 64 KiB, and the only things held
are what canonical order needs, the members of the objects still open (sorted
when they close). The memory is the canonical text (about the body's size; up
to three times it for text that becomes ``\\uXXXX`` escapes) and those members.

Arrays and objects up to 64 KiB are read by json's own scanner, in C, and
spelled by :func:`~stasis.canonical.canonical_into` as a small body is: most
of a body's values go that way, at the speed of the whole-document code.

A body is *over budget* when it has more structural bytes (``,`` ``:`` ``[``
``{``, which bound its values, and so the time) than :class:`Budget` allows
for its size, or its open objects hold more members than the body's size in
Python objects, or a member name is over 64 KiB: it is keyed by its bytes
instead (``raw:``), as a body that is not JSON is. The budget depends on
nothing but the bytes, so a body always gets the same key, and a raw key
never equals a canonical one, so an over-budget body shares an answer only
with the same bytes.
"""

from __future__ import annotations

import codecs
import json
import re
from _json import scanstring  # json.decoder's, in C
from collections.abc import Callable
from itertools import pairwise
from operator import itemgetter
from typing import Any, TypeAlias

from attrs import frozen

from stasis.canonical import (
    MAX_JSON_DEPTH,
    Constant,
    Spelled,
    TooDeep,
    canonical_into,
    number_spelling,
    quoted,
    unique_object,
)
from stasis.ignore import EVERY, IgnorePath, Step, dropped

__all__ = ["Budget", "NotCanonical", "OverBudget", "Streamed", "canonical_parts", "structure_bytes"]

#: Output is written into pieces of about this many bytes.
_PIECE = 64 * 1024
#: The most one call into C is given at once (a regular expression, a decode):
#: the thread keying a body hands the interpreter back to the reactor between
#: calls, and a regular expression repeating a group keeps a little state per
#: repetition (a 1 MiB window of numbers took six times its size).
_WINDOW = 64 * 1024
#: A string spelled in one piece up to this many bytes; a longer one in slices.
_SLICE = 256 * 1024
#: A member name longer than this puts a body over budget: names are held whole.
_MAX_NAME = 64 * 1024
#: A plain ASCII string (written back unchanged) is looked for up to this length.
_SHORT = 4096
#: An array or object up to this many bytes is read by json's own scanner, in C,
#: into a document spelled by canonical_into (~100 bytes of objects per value,
#: for a moment); a larger one token by token here.
_SCAN_MAX = 64 * 1024
#: Arrays and objects open at once, counting those an ignore rule leaves out
#: (whose nesting MAX_JSON_DEPTH does not bound): where ``json.loads`` runs out
#: of stack (the interpreter's default recursion limit).
_MAX_OPEN = 1000
#: Bytes of Python objects one held member costs beyond its name's text: a
#: tuple, the name as ``str`` and as quoted bytes, its value's bytes object.
_MEMBER_COST = 240
#: Strings kept from the top-level object up to this many characters.
_HEAD_TEXT = 1024


class NotCanonical(ValueError):
    """The body has no canonical spelling here: it is keyed by its bytes."""


class OverBudget(NotCanonical):
    """The body may be JSON, but spelling it would take more time or memory than allowed."""


@frozen
class Budget:
    """How much canonicalising one body may take; see :meth:`for_size`."""

    #: Structural bytes (``,`` ``:`` ``[`` ``{``) in the body: every value but
    #: the first follows one, so this bounds the values read, and the time.
    structure: int
    #: Bytes of Python objects held for open objects' members (see _MEMBER_COST).
    held: int

    #: Structural bytes allowed whatever the size: ~1 s of reading.
    STRUCTURE_FLOOR = 1_000_000
    #: Beyond the floor, one structural byte per this many bytes of body.
    BYTES_PER_STRUCTURE = 12
    #: Held bytes allowed whatever the size.
    HELD_FLOOR = 16 * 1024 * 1024

    @classmethod
    def for_size(cls, size: int) -> Budget:
        """
        The budget of a body of ``size`` bytes: a million structural bytes, or
        one per 12 bytes of a larger body, and members held worth the body's
        size (at least 16 MiB). Ordinary bodies stay far below it: a chat
        conversation has a structural byte every 20 bytes or more, a batch of
        token ids one every ~6 (so one beyond a million tokens is over budget).
        """
        return cls(
            structure=max(cls.STRUCTURE_FLOOR, size // cls.BYTES_PER_STRUCTURE),
            held=max(cls.HELD_FLOOR, size),
        )


@frozen
class Streamed:
    """A body's canonical text, and what was read of its top-level object."""

    #: The canonical text, in pieces (joined, it is what ``canonical_json`` spells).
    parts: tuple[bytes, ...]
    #: The top-level object's members whose values are scalars (strings up to a
    #: kilobyte), as ``json.loads`` reads them but numbers as :class:`Spelled`:
    #: enough to name the model. None when the body is not an object.
    head: dict[str, Any] | None


_SPACE = re.compile(rb"[ \t\n\r]*")
# A number, as json's grammar has it.
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
# Numbers each followed by a comma: most of an array of numbers, read at once.
_NUMBERS = re.compile(
    rb"(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?[ \t\n\r]*,[ \t\n\r]*)+"
)
# The rest of a string json.dumps writes back unchanged: printable ASCII but
# for the quote and the backslash.
_PLAIN_REST = re.compile(rb'[ !#-\[\]-~]*"')
# What may follow a number in an array: a number followed by anything else, or
# by the window's end, may be the start of a longer one.
_ENDS_NUMBER = frozenset(" \t\n\r,]")
# What goes between two values of an array (in a decoded window: a str).
_SEPARATOR = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
# A string's content up to its closing quote (or as far as the window goes).
_CONTENT = re.compile(rb'[^"\\]*(?:\\[\s\S][^"\\]*)*')

#: Literals by their first byte: the text, and the value json.loads reads.
_LITERALS: dict[int, tuple[bytes, Any]] = {
    ord("t"): (b"true", True),
    ord("f"): (b"false", False),
    ord("n"): (b"null", None),
    ord("N"): (b"NaN", Constant("NaN")),
    ord("I"): (b"Infinity", Constant("Infinity")),
}
_MINUS_INFINITY = (b"-Infinity", Constant("-Infinity"))

# What a byte begins (0: nothing JSON has there).
_WS, _STR, _NUM, _LIT, _COMMA, _COLON, _OPEN_A, _CLOSE_A, _OPEN_O, _CLOSE_O = range(1, 11)
_BEGINS = bytearray(256)
for _byte, _kind in [(b" \t\n\r", _WS), (b'"', _STR), (b"-0123456789", _NUM), (b"tfnNI", _LIT)]:
    for _each in _byte:
        _BEGINS[_each] = _kind
for _byte, _kind in [(b",", _COMMA), (b":", _COLON), (b"[", _OPEN_A), (b"]", _CLOSE_A)]:
    _BEGINS[_byte[0]] = _kind
_BEGINS[ord("{")], _BEGINS[ord("}")] = _OPEN_O, _CLOSE_O
_QUOTE = ord('"')

# What the reader expects next.
_VALUE = 0  # a value: at the top, after an array's ',', after ':'
_VALUE_OR_END = 1  # after '['
_NAME = 2  # after an object's ','
_NAME_OR_END = 3  # after '{'
_COLON_NEXT = 4  # after a member's name
_AFTER = 5  # after a value: ',' or the container's end (at the top: the body's end)

#: A value's canonical text: one piece, or several (a container, a long string).
_Text: TypeAlias = bytes | list[bytes]
#: The rules still to match below a container: what remains of each rule's steps.
_Rules: TypeAlias = tuple[tuple[Step, ...], ...]
#: Values of an array read at once: their text, how many, where they end, and
#: whether a comma follows.
_Run: TypeAlias = tuple[bytes, int, int, bool]
#: What the reader expects of a member being read: its name, that name quoted,
#: whether a rule drops it, the rules below it.
_Member: TypeAlias = tuple[str, bytes, bool, _Rules]


class _Out:
    """Canonical text being written: pieces of about _PIECE bytes."""

    __slots__ = ("pieces", "tail")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.tail = bytearray()

    def write(self, data: bytes) -> None:
        tail = self.tail
        tail += data
        if len(tail) >= _PIECE:
            self.pieces.append(bytes(tail))
            tail.clear()

    def write_text(self, text: _Text) -> None:
        if isinstance(text, bytes):
            self.write(text)
            return
        for piece in text:
            if len(piece) < _PIECE:
                self.write(piece)
            else:
                if self.tail:
                    self.pieces.append(bytes(self.tail))
                    self.tail.clear()
                self.pieces.append(piece)

    def done(self) -> list[bytes]:
        if self.tail:
            self.pieces.append(bytes(self.tail))
            self.tail = bytearray()
        return self.pieces


class _Open:
    """An array or object not yet closed."""

    __slots__ = ("array", "count", "dropped", "held", "member", "members", "out", "rules", "sink")

    def __init__(self, array: bool, rules: _Rules, dropped: bool, sink: bool) -> None:
        self.array = array
        #: Rules that may name something below this value.
        self.rules = rules
        #: Whether an ignore rule leaves this value out (it must still be valid JSON).
        self.dropped = dropped
        #: Whether its text is thrown away: it, or a container around it, is dropped.
        self.sink = sink
        #: Elements read so far (arrays).
        self.count = 0
        self.out: _Out | None = _Out() if array and not sink else None
        #: name, name quoted (b"" when left out), value's text (objects).
        self.members: list[tuple[str, bytes, _Text]] = []
        self.member: _Member | None = None
        #: Bytes of the budget this object's members hold.
        self.held = 0


def _below(rules: _Rules, step: str | int) -> tuple[bool, _Rules]:
    """Whether ``step`` (a member's name, an element's index) is dropped, and the rules below it."""
    dropped = False
    below: list[tuple[Step, ...]] = []
    for steps in rules:
        first = steps[0]
        if first is EVERY or first == step:  # a name never equals an index
            if len(steps) == 1:
                dropped = True
            else:
                below.append(steps[1:])
    return dropped, () if dropped else tuple(below)


def _cut(text: bytes, low: int, high: int) -> int:
    """
    Where a string's content, from ``low`` (where an escape may begin), may be
    cut at or before ``high``: not inside an escape, nor a UTF-8 sequence.
    """
    back = text.rfind(b"\\", max(low, high - 6), high)
    if back != -1:
        run = text[low : back + 1]
        run_start = back + 1 - (len(run) - len(run.rstrip(b"\\")))
        # Backslashes from run_start pair up into escapes; an odd last one
        # begins an escape (\\uXXXX at most) that may reach past ``high``.
        if (back + 1 - run_start) % 2:
            return back
    while 0x80 <= text[high] < 0xC0 and high > low + 1:
        high -= 1
    return high


def _slices(text: bytes, start: int, stop: int) -> list[bytes]:
    """The canonical text of a long string's content ``text[start:stop]``, slice by slice."""
    out: list[bytes] = [b'"']
    at = start
    while at < stop:
        cut = stop if stop - at <= _SLICE else _cut(text, at, at + _SLICE)
        # An escaped surrogate pair cut in two is quoted as the pair is.
        value, _ = scanstring(text[at:cut].decode("utf-8", "surrogatepass") + '"', 0, True)
        out.append(quoted(value)[1:-1].encode("ascii"))
        at = cut
    out.append(b'"')
    return out


def _string(text: bytes, start: int, want: bool, whole: int) -> tuple[int, _Text, str | None]:
    """
    The string whose content begins at ``start`` (after its opening quote):
    where it ends (after its closing quote), its canonical text and, when
    ``want``, its value: never for one longer than ``whole`` bytes, which is
    spelled in slices.
    """
    end = len(text)
    plain = _PLAIN_REST.match(text, start, min(end, start + _SHORT))
    if plain is not None:
        stop = plain.end()
        canon = text[start - 1 : stop]
        return stop, canon, canon[1:-1].decode("ascii") if want else None
    at = start
    while True:
        limit = min(end, at + _WINDOW)
        reached = _CONTENT.match(text, at, limit).end()  # type: ignore[union-attr]  # matches ""
        if reached < limit and text[reached] == _QUOTE:
            break
        if limit == end:
            raise NotCanonical("a string without its closing quote")
        at = reached
    if reached - start > whole:
        return reached + 1, _slices(text, start, reached), None
    value, _ = scanstring(text[start : reached + 1].decode("utf-8", "surrogatepass"), 0, True)
    return reached + 1, quoted(value).encode("ascii"), value


#: Spellings remembered, by their text, per body (bounded: ~10 MB of them at most).
_REMEMBERED = 1 << 15


class _Numbers(dict[bytes, bytes]):
    """Numbers' canonical spellings by their text (a lookup in C when known)."""

    def __missing__(self, text: bytes) -> bytes:
        try:
            spelled = number_spelling(text.decode("ascii")).encode("ascii")
        except ValueError:  # an exponent beyond what Decimal holds: json.loads fails too
            raise NotCanonical("a JSON number out of range") from None
        if len(self) < _REMEMBERED:
            self[text] = spelled
        return spelled


class _Spellings(dict[str, Spelled]):
    """Numbers' spellings by their text, for json's scanner (a lookup in C when known)."""

    def __missing__(self, text: str) -> Spelled:
        spelled = Spelled(number_spelling(text))
        if len(self) < _REMEMBERED:
            self[text] = spelled
        return spelled


class _Scanner:
    """
    Reads a small array or object with json's scanner, as ``json.loads`` does
    (duplicate names refused), numbers as :class:`Spelled`.

    The body is decoded a window (_SCAN_MAX bytes) at a time, and the values
    in a window are all read from that one decoding: a body's bytes are
    decoded about once, not once per value.
    """

    def __init__(self) -> None:
        spellings = _Spellings()
        decoder = json.JSONDecoder(
            parse_float=spellings.__getitem__,
            parse_int=spellings.__getitem__,
            parse_constant=Constant,
            object_pairs_hook=unique_object,
        )
        self._scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
        #: The window decoded, and the bytes of the body it covers.
        self._chars = ""
        self._end = 0
        #: Whether it is all ASCII (a byte's offset is then its character's).
        self._ascii = True
        #: A byte offset in the window's bytes and its character's index in ``_chars``.
        self._byte = 0
        self._char = 0

    def read(self, text: bytes, at: int) -> tuple[Any, int] | None:
        """
        The array or object starting at ``text[at]`` and where it ends, or
        None when it is larger than ``_SCAN_MAX`` bytes or is not JSON (the
        reader then finds what is wrong itself).
        """
        index = self._index(text, at)
        if index is not None:
            try:
                value, stop = self._scan(self._chars, index)
            except (StopIteration, ValueError, RecursionError):
                pass  # it goes on past the window (or is not JSON): a window of its own
            else:
                return value, self._advance(at, index, stop)
        if not _SCAN_MAX:
            return None
        window = text[at : at + _SCAN_MAX]
        try:
            chars, taken = codecs.utf_8_decode(window, "surrogatepass", False)
            value, stop = self._scan(chars, 0)
        except (StopIteration, ValueError, RecursionError):
            return None
        self._chars, self._end, self._ascii = chars, at + taken, len(chars) == taken
        return value, self._advance(at, 0, stop)

    def run(self, text: bytes, at: int, room: int, sink: bool) -> _Run | None:
        """
        The values of an array from ``text[at]`` on, as many as one window
        holds: their canonical text (commas between), how many, where they
        end, and whether a comma follows the last (else what follows is left
        to the reader: the array's end, or what is wrong). ``room``: arrays
        and objects that may still open. None when the first cannot be read.
        """
        first = self.read(text, at)
        if first is None:
            return None
        value, end = first
        parts: list[str] = []
        if not sink:
            canonical_into(value, parts, room)
        count = 1
        chars, scan, separator = self._chars, self._scan, _SEPARATOR.match
        start = index = self._char
        more = False
        while True:
            comma = separator(chars, index)
            if comma is None:
                break
            after = comma.end()
            try:
                value, stop = scan(chars, after)
            except (StopIteration, ValueError, RecursionError):
                stop = 0
            if not stop or (
                type(value) is Spelled and (stop == len(chars) or chars[stop] not in _ENDS_NUMBER)
            ):
                # Not read, or a number the window may have cut short ("-1" of
                # "-10", "1.5" of "1.5e+3"): the next value is the reader's.
                index, more = after, True
                break
            if not sink:
                parts.append(",")
                canonical_into(value, parts, room)
            count += 1
            index = stop
        return "".join(parts).encode("ascii"), count, self._advance(end, start, index), more

    def _index(self, text: bytes, at: int) -> int | None:
        """Where the byte ``at`` is in the window decoded, if it is there."""
        if not self._byte <= at < self._end:
            return None
        if self._ascii:
            return self._char + at - self._byte
        between = text[self._byte : at]  # what the reader went over since: often ", "
        return self._char + len(between) if between.isascii() else None

    def _advance(self, at: int, index: int, stop: int) -> int:
        """Past a value read from ``_chars[index:stop]``, at the body's byte ``at``."""
        if self._ascii:
            end = at + stop - index
        else:
            end = at + len(self._chars[index:stop].encode("utf-8", "surrogatepass"))
        self._byte, self._char = end, stop
        return end


def _utf8(body: bytes) -> tuple[bytes, int]:
    """The body as UTF-8, and where its JSON starts: decoded as ``json.loads`` decodes bytes."""
    encoding = json.detect_encoding(body)
    if encoding == "utf-8":
        return body, 0
    if encoding == "utf-8-sig":
        return body, len(codecs.BOM_UTF8)
    # UTF-16 or UTF-32 (rare): transcoded, window by window.
    decoder = codecs.getincrementaldecoder(encoding)("surrogatepass")
    out = bytearray()
    for at in range(0, len(body), _WINDOW):
        piece = decoder.decode(body[at : at + _WINDOW], at + _WINDOW >= len(body))
        out += piece.encode("utf-8", "surrogatepass")
    return bytes(out), 0


def structure_bytes(text: bytes) -> int:
    """
    The structural bytes (``,`` ``:`` ``[`` ``{``) in a JSON text: every value
    but the first follows one, so they bound the values, and the time
    ``json.loads`` takes (in C, holding the interpreter) far better than its size.
    """
    return text.count(b",") + text.count(b":") + text.count(b"[") + text.count(b"{")


def canonical_parts(
    body: bytes, ignore: tuple[IgnorePath, ...] = (), budget: Budget | None = None
) -> Streamed:
    """
    The canonical text of the JSON ``body`` less what ``ignore`` names: what
    :func:`stasis.canonical.canonical_json` spells of ``dropped(json.loads(body))``.

    :class:`NotCanonical` (a ``ValueError``) where ``json.loads`` fails or
    :func:`stasis.keys.parse_body` keys the body raw (a duplicate name, a
    number ``Decimal`` cannot hold, nesting beyond :data:`MAX_JSON_DEPTH`);
    :class:`OverBudget` beyond ``budget`` (by default :meth:`Budget.for_size`
    of the body).
    """
    if budget is None:
        budget = Budget.for_size(len(body))
    try:
        text, pos = _utf8(body)
        if structure_bytes(text) > budget.structure:
            raise OverBudget("too many values")
        return _Reader(text, tuple(rule.steps for rule in ignore), budget).read(pos)
    except (UnicodeDecodeError, json.JSONDecodeError, TooDeep) as e:
        raise NotCanonical(str(e)) from None


#: A value not kept in the head.
_UNSEEN: Any = object()


class _Reader:
    """One body being read: the containers open, the members they hold."""

    def __init__(self, text: bytes, rules: _Rules, budget: Budget) -> None:
        self.text = text
        self.rules = rules
        self.budget = budget
        self.numbers = _Numbers()
        self.scanner = _Scanner()
        self.held = 0
        self.head: dict[str, Any] | None = None

    def read(self, pos: int) -> Streamed:
        text = self.text
        end = len(text)
        begins = _BEGINS
        numbers = self.numbers
        stack: list[_Open] = []
        top: _Open | None = None  # the innermost open container
        result: _Text = b""
        state = _VALUE
        depth = 0  # open containers whose text is kept
        while True:
            if pos >= end:
                if state == _AFTER and top is None:
                    break
                raise NotCanonical("the body ends before its JSON does")
            kind = begins[text[pos]]
            canon: _Text
            value: Any = _UNSEEN
            if kind == _WS:
                pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches ""
                continue
            if (
                kind in (_OPEN_A, _OPEN_O, _STR)
                and state <= _VALUE_OR_END
                and top is not None
                and top.array
                and not top.rules
            ):  # the values of an array, as many at once as json's scanner reads
                taken = self.scanner.run(text, pos, MAX_JSON_DEPTH - depth, top.sink)
                if taken is not None:
                    spelled, count, pos, more = taken
                    out = top.out
                    if out is not None:
                        if top.count:
                            out.write(b",")
                        out.write(spelled)
                    top.count += count
                    state = _VALUE if more else _AFTER
                    continue
            if kind == _NUM:
                if state > _VALUE_OR_END:
                    raise NotCanonical("a number where it cannot be")
                if top is not None and top.array and not top.rules:
                    run = _NUMBERS.match(text, pos, min(end, pos + _WINDOW))
                    if run is not None:  # numbers each followed by a comma, read at once
                        stop = run.end()
                        found = text[pos:stop].translate(None, b" \t\n\r").split(b",")
                        found.pop()  # after the last comma
                        spelled = b",".join(map(numbers.__getitem__, found))
                        out = top.out
                        if out is not None:
                            if top.count:
                                out.write(b",")
                            out.write(spelled)  # the comma after it: the next element's
                        top.count += len(found)
                        pos = stop
                        state = _VALUE
                        continue
                number = _NUMBER.match(text, pos)
                if number is None:
                    if not text.startswith(b"-Infinity", pos):
                        raise NotCanonical("not a JSON number")
                    canon, value = _MINUS_INFINITY
                    pos += len(canon)
                else:
                    pos = number.end()
                    canon = numbers[number.group()]
                    if not stack and self.head is not None:
                        value = Spelled(canon.decode("ascii"))
            elif kind == _STR:
                pos += 1
                if state in (_NAME, _NAME_OR_END):
                    assert top is not None
                    pos, canon, name = _string(text, pos, True, _MAX_NAME)
                    if name is None or not isinstance(canon, bytes):
                        raise OverBudget("a member name too long")
                    if top.rules:
                        top.member = (name, canon, *_below(top.rules, name))
                    else:
                        top.member = (name, canon, False, ())
                    state = _COLON_NEXT
                    continue
                if state > _VALUE_OR_END:
                    raise NotCanonical("a string where it cannot be")
                in_head = not stack and self.head is not None
                pos, canon, text_value = _string(text, pos, in_head, _SLICE)
                if text_value is not None and len(text_value) <= _HEAD_TEXT:
                    value = text_value
            elif kind == _LIT:
                if state > _VALUE_OR_END:
                    raise NotCanonical("a literal where it cannot be")
                canon, value = _LITERALS[text[pos]]
                if not text.startswith(canon, pos):
                    raise NotCanonical("not a JSON literal")
                pos += len(canon)
            elif kind == _COMMA:
                if state != _AFTER or top is None:
                    raise NotCanonical("a misplaced ','")
                pos += 1
                state = _VALUE if top.array else _NAME
                continue
            elif kind == _COLON:
                if state != _COLON_NEXT:
                    raise NotCanonical("a misplaced ':'")
                pos += 1
                state = _VALUE
                continue
            elif kind in (_OPEN_A, _OPEN_O):
                if state > _VALUE_OR_END:
                    raise NotCanonical("a misplaced array or object")
                array = kind == _OPEN_A
                if top is None:
                    opened = _Open(array, self.rules, False, False)
                    if not array:
                        self.head = {}
                else:
                    dropped, below = self._value_rules(top)
                    sink = dropped or top.sink
                    small = self.scanner.read(text, pos)
                    if small is not None:
                        document, pos = small
                        if sink:
                            canon = b""
                        else:
                            if below:
                                document = _dropped(document, below)
                            parts: list[str] = []
                            canonical_into(document, parts, MAX_JSON_DEPTH - depth)
                            canon = "".join(parts).encode("ascii")
                        self._add(top, canon, dropped)
                        state = _AFTER
                        continue
                    if len(stack) + 1 >= _MAX_OPEN:
                        raise NotCanonical("nested too deep")
                    stack.append(top)
                    opened = _Open(array, below, dropped, sink)
                pos += 1
                if not opened.sink:
                    depth += 1
                    if depth > MAX_JSON_DEPTH:
                        raise NotCanonical("nested too deep")
                if opened.out is not None:
                    opened.out.write(b"[")
                top = opened
                state = _VALUE_OR_END if array else _NAME_OR_END
                continue
            elif kind in (_CLOSE_A, _CLOSE_O):
                array = kind == _CLOSE_A
                if (
                    top is None
                    or top.array != array
                    or (state != _AFTER and state != (_VALUE_OR_END if array else _NAME_OR_END))
                ):
                    raise NotCanonical("a misplaced ']' or '}'")
                pos += 1
                closed = top
                top = stack.pop() if stack else None
                if not closed.sink:
                    depth -= 1
                if closed.array:
                    out = closed.out
                    if out is None:
                        canon = b""
                    else:
                        out.write(b"]")
                        canon = out.done()
                else:
                    canon = _object_text(closed)
                    self.held -= closed.held
                if top is None:
                    result = canon
                else:
                    self._add(top, canon, closed.dropped)
                state = _AFTER
                continue
            else:
                raise NotCanonical("not JSON")
            # A scalar ends here.
            if top is None:
                result = canon
            elif top.array:
                if top.rules:
                    self._add(top, canon, _below(top.rules, top.count)[0])
                else:  # _add, inlined: most values are an array's
                    out = top.out
                    if out is not None:
                        tail = out.tail
                        if top.count:
                            tail += b","
                        if isinstance(canon, bytes):
                            tail += canon
                            if len(tail) >= _PIECE:
                                out.pieces.append(bytes(tail))
                                tail.clear()
                        else:
                            out.write_text(canon)
                    top.count += 1
            else:
                member = top.member
                assert member is not None
                if value is not _UNSEEN and not stack and self.head is not None:
                    self.head.setdefault(member[0], value)
                self._add(top, canon, member[2])
            state = _AFTER
        return Streamed(tuple([result] if isinstance(result, bytes) else result), self.head)

    @staticmethod
    def _value_rules(container: _Open) -> tuple[bool, _Rules]:
        """Whether the value starting in ``container`` is dropped, and the rules below it."""
        if container.array:
            return _below(container.rules, container.count) if container.rules else (False, ())
        assert container.member is not None
        return container.member[2], container.member[3]

    def _add(self, container: _Open, canon: _Text, dropped: bool) -> None:
        """A value ends in ``container``: its text goes where canonical order wants it."""
        if container.array:
            count = container.count
            container.count = count + 1
            out = container.out
            if out is not None:
                if count:
                    out.write(b",")
                out.write_text(b"null" if dropped else canon)
            return
        member = container.member
        assert member is not None
        container.member = None
        name, spelled = member[0], member[1]
        cost = _MEMBER_COST + 4 * len(name) + len(spelled)
        container.held += cost
        self.held += cost
        if self.held > self.budget.held:
            raise OverBudget("too many members held")
        if container.sink or dropped:
            container.members.append((name, b"", b""))
        else:
            container.members.append((name, spelled, canon))


def _dropped(document: Any, rules: _Rules) -> Any:
    """``document`` less what the rules' remaining steps name (see :func:`dropped`)."""
    return dropped(document, [IgnorePath("", steps) for steps in rules])


def _object_text(closed: _Open) -> _Text:
    """An object's canonical text from its members; a duplicate name is not JSON the key reads."""
    members = closed.members
    members.sort(key=itemgetter(0))
    for before, after in pairwise(members):
        if before[0] == after[0]:
            raise NotCanonical("a duplicate name in an object")
    if closed.sink:
        return b""
    out = _Out()
    out.write(b"{")
    first = True
    for _, spelled, canon in members:
        if not spelled:  # left out by an ignore rule
            continue
        if not first:
            out.write(b",")
        first = False
        out.write(spelled)
        out.write(b":")
        out.write_text(canon)
    out.write(b"}")
    pieces = out.done()
    return pieces[0] if len(pieces) == 1 else pieces
