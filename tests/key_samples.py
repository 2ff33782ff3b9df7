"""
Request bodies whose keys are pinned (tests/test_keys_pinned.py): ordinary ones,
small and large, in the spellings clients send.

Their digests were computed with the keying code as it was before large bodies
were canonicalised in a stream (commit c957452): every body here must keep the
key it had, or databases and cassettes recorded since stop matching. The bodies
are built, not stored: a seeded generator makes the same bytes on every run.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any

__all__ = ["SAMPLES", "Sample"]

#: name, body, ignore rules (their texts).
Sample = tuple[str, bytes, tuple[str, ...]]

_CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": 'Say hi, café 東京 😀 "quoted" back\\slash\ttab'},
    ],
    "temperature": 0.2,
    "max_tokens": 16,
}


def _words(rnd: random.Random, count: int) -> str:
    vocabulary = ["the", "cache", "answer", "é", "naïve", "東京", "😀", "“q”", "a\\b", '"', "\n"]
    return " ".join(rnd.choice(vocabulary) for _ in range(count))


def _conversation(rnd: random.Random, messages: int) -> dict[str, Any]:
    return {
        "model": "claude-3-5-sonnet",
        "max_tokens": 1024,
        "messages": [
            {
                "role": ("user", "assistant")[i % 2],
                "id": f"msg_{rnd.getrandbits(64):016x}",
                "content": [{"type": "text", "text": _words(rnd, rnd.randrange(1, 60))}],
            }
            for i in range(messages)
        ],
        "metadata": {"user_id": "u-1"},
    }


def _tokens(rnd: random.Random, inputs: int, length: int) -> dict[str, Any]:
    return {
        "input": [[rnd.randrange(100_000) for _ in range(length)] for _ in range(inputs)],
        "model": "text-embedding-3-small",
        "encoding_format": "float",
    }


def _numbers(rnd: random.Random, count: int) -> str:
    spellings = [
        lambda: str(rnd.randrange(-(10**6), 10**6)),
        lambda: repr(rnd.uniform(-1e3, 1e3)),
        lambda: f"{rnd.randrange(1, 999)}.{rnd.randrange(0, 1000):03d}00",
        lambda: f"{rnd.randrange(1, 99)}e{rnd.randrange(-30, 30)}",
        lambda: f"-{rnd.randrange(0, 9)}.{rnd.randrange(0, 99)}E+{rnd.randrange(0, 9)}",
        lambda: "0",
        lambda: "-0.0",
        lambda: "1" + "0" * rnd.randrange(0, 40),
        lambda: "0.000" + str(rnd.randrange(1, 10**9)),
    ]
    return "[" + ", ".join(rnd.choice(spellings)() for _ in range(count)) + "]"


def _escapes(rnd: random.Random, size: int) -> str:
    """A JSON string literal of ~``size`` bytes dense with escapes of every kind."""
    pieces = ["\\n", '\\"', "\\\\", "\\/", "\\u00e9", "\\ud83d\\ude00", "\\u6771", "é", "😀", "x"]
    pieces += ["\\t", "\\b", "\\f", "\\r", "\\u0000", "\\u001F", "abc", "\\\\\\\\", "\\ud800"]
    out: list[str] = []
    total = 0
    while total < size:
        piece = rnd.choice(pieces) * rnd.randrange(1, 9)
        out.append(piece)
        total += len(piece)
    return '"' + "".join(out) + '"'


def _nested(depth: int, padding: int) -> bytes:
    pad = json.dumps("p" * padding).encode()
    return b'{"pad": ' + pad + b', "deep": ' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


def _build() -> list[Sample]:
    rnd = random.Random(20240615)
    chat = json.dumps(_CHAT).encode()
    samples: list[Sample] = [
        ("chat", chat, ()),
        ("chat-compact", json.dumps(_CHAT, separators=(",", ":"), ensure_ascii=False).encode(), ()),
        ("chat-indented-sorted", json.dumps(_CHAT, indent=2, sort_keys=True).encode(), ()),
        ("chat-utf16", json.dumps(_CHAT, ensure_ascii=False).encode("utf-16"), ()),
        ("chat-utf8-bom", b"\xef\xbb\xbf" + json.dumps(_CHAT, ensure_ascii=False).encode(), ()),
        ("chat-ignore", chat, ("metadata.user_id", "messages[*].id", "temperature")),
        ("numbers", _numbers(rnd, 400).encode(), ()),
        ("constants", b'{"a": NaN, "b": [Infinity, -Infinity, "NaN"], "c": -0}', ()),
        ("escapes", _escapes(rnd, 4000).encode(), ()),
        ("lone-surrogates", b'["\\ud800", "\\udc00x", "a\\udbff\\udfffb", "\\ude00\\ud83d"]', ()),
        ("empty-containers", b'{"a": [], "b": {}, "c": [[], {}, [[]]], "": ""}', ()),
        ("scalar-string", b'"just a string"', ()),
        ("scalar-number", b"  1.50e3  ", ()),
        ("depth-128", b"[" * 128 + b"1" + b"]" * 128, ()),
        ("depth-129", b"[" * 129 + b"1" + b"]" * 129, ()),
        ("duplicate", b'{"a": 1, "b": {"c": 1, "c": 2}}', ()),
        ("not-json", b"model=gpt&input=hello", ()),
        ("trailing-comma", b'{"a": [1, 2,]}', ()),
        # Larger than the bodies canonicalised in one piece.
        ("conversation", json.dumps(_conversation(rnd, 3000)).encode(), ()),
        (
            "conversation-ascii-ignore",
            json.dumps(_conversation(rnd, 3000), indent=1).encode(),
            ("metadata.user_id", "messages[*].id", "messages[3]", "max_tokens"),
        ),
        ("token-arrays", json.dumps(_tokens(rnd, 20, 4000)).encode(), ()),
        (
            "token-arrays-compact",
            json.dumps(_tokens(rnd, 5, 8000), separators=(",", ":")).encode(),
            (),
        ),
        (
            "image",
            json.dumps(
                {
                    "model": "gpt-4o",
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "What is in this picture?"},
                                {
                                    "type": "image_url",
                                    "image_url": {
                                        "url": "data:image/png;base64,"
                                        + base64.b64encode(rnd.randbytes(1_600_000)).decode()
                                    },
                                },
                            ],
                        }
                    ],
                }
            ).encode(),
            (),
        ),
        (
            "cjk-document",
            json.dumps({"text": "東京の天気は晴れ。" * 60_000}, ensure_ascii=False).encode(),
            (),
        ),
        ("emoji-document", json.dumps({"text": "😀🎉a" * 60_000}, ensure_ascii=False).encode(), ()),
        ("emoji-escaped", json.dumps({"text": "😀🎉a" * 60_000}).encode(), ()),
        (
            "ascii-with-one-emoji",
            json.dumps(["x" * 900_000 + "😀" + "y" * 300_000], ensure_ascii=False).encode(),
            (),
        ),
        ("escapes-large", b'{"s": ' + _escapes(rnd, 2_500_000).encode() + b', "model": "m"}', ()),
        ("numbers-large", _numbers(rnd, 40_000).encode(), ()),
        (
            "many-keys",
            json.dumps(
                {f"key-{rnd.getrandbits(40):010x}": rnd.randrange(10) for _ in range(20_000)}
            ).encode(),
            (),
        ),
        (
            "large-utf16",
            json.dumps(_conversation(rnd, 500), ensure_ascii=False).encode("utf-16"),
            (),
        ),
        ("large-depth-128", _nested(128, 100_000), ()),
        ("large-depth-129", _nested(129, 100_000), ()),
        (
            "large-duplicate",
            json.dumps(_conversation(rnd, 800)).encode()[:-1] + b', "x": {"k": 1, "k": 1}}',
            (),
        ),
        ("large-trailing-comma", json.dumps(_conversation(rnd, 800)).encode()[:-1] + b",}", ()),
        ("large-not-utf8", json.dumps(_conversation(rnd, 800)).encode()[:-2] + b'\xff"}', ()),
        ("large-exponent", b"[" + b"1, " * 40_000 + b"1e9999999999999999999]", ()),
        ("large-long-number", b"[" + b"1" + b"0" * 200_000 + b", 0." + b"0" * 100_000 + b"7]", ()),
    ]
    return samples


SAMPLES: list[Sample] = _build()

#: Re-exported for tests that build their own bodies the same way.
words: Callable[[random.Random, int], str] = _words
