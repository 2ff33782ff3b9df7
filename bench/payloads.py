"""
The bytes the benchmark sends and the fake upstream answers, in one place.

Request and answer sizes match the numbers the performance targets are stated
in (a ~1 KB chat request, a ~1.5 KB completion with usage), and answers are
made of varied words so that gzip in the store compresses them about as much
as a real model's prose, which the database-size figure depends on.
"""

from __future__ import annotations

import json
import random

__all__ = [
    "ID_MARK",
    "chat_request",
    "completion",
    "sse_block",
    "sse_done",
    "sse_event",
]

#: Replaced by a per-request counter in the wrk script, so that every request is a miss.
ID_MARK = "@@ID@@"

_VOCABULARY = (
    "the model a cache answer request token stream proxy latency network every call "
    "that which with from into over under after before while because although since "
    "python twisted reactor deferred socket buffer producer consumer header body json "
    "store entry key hash secret upstream client server daemon process thread pool "
    "simple fast small large quick careful correct stable honest clear useful real "
    "is are was were be been being have has had do does did will would can could "
    "should may might must shall not only also just then than so very more most "
    "data value number string list object field record index table query result "
    "time second minute hour day week year moment early late soon again once twice"
)
_WORDS = _VOCABULARY.split()

_REQUEST_TEXT = (
    "You are a careful assistant. Summarise the following notes in three short "
    "bullet points, keeping every number exactly as written and naming each "
    "system that is mentioned. "
)


def _prose(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def chat_request(tag: str = ID_MARK, stream: bool = False, size: int = 1024) -> bytes:
    """
    A chat completion request of about ``size`` bytes whose user message ends in ``tag``.

    The same ``tag`` gives the same bytes, hence the same cache key; ``ID_MARK``
    leaves a placeholder for the wrk script to fill.
    """
    rng = random.Random(1)
    document: dict[str, object] = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": _REQUEST_TEXT},
            {"role": "user", "content": "NOTES"},
        ],
    }
    if stream:
        document["stream"] = True
    skeleton = json.dumps(document)
    room = max(0, size - len(skeleton) - len(tag) - 1)
    user = _prose(rng, room) + " " + tag
    document["messages"] = [
        {"role": "system", "content": _REQUEST_TEXT},
        {"role": "user", "content": user},
    ]
    return json.dumps(document).encode()


def completion(seed: int, size: int = 1536) -> bytes:
    """An OpenAI chat completion of about ``size`` bytes, with usage; varied by ``seed``."""
    rng = random.Random(seed)
    document = {
        "id": f"chatcmpl-bench{seed:012d}",
        "object": "chat.completion",
        "created": 1_700_000_000 + seed,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 231, "completion_tokens": 287, "total_tokens": 518},
        "system_fingerprint": "fp_bench0001",
    }
    room = size - len(json.dumps(document))
    document["choices"][0]["message"]["content"] = _prose(rng, room)  # type: ignore[index]
    return json.dumps(document).encode()


def sse_event(text: str) -> bytes:
    """One OpenAI ``chat.completion.chunk`` server-sent event carrying ``text``."""
    chunk = {
        "id": "chatcmpl-benchstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench0001",
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        ],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def sse_block(size: int = 65536) -> bytes:
    """Whole events, about ``size`` bytes of them: the unit a fast stream is written in."""
    rng = random.Random(7)
    events: list[bytes] = []
    total = 0
    while total < size:
        event = sse_event(" " + " ".join(rng.choice(_WORDS) for _ in range(3)))
        events.append(event)
        total += len(event)
    return b"".join(events)


def sse_done() -> bytes:
    return b"data: [DONE]\n\n"
