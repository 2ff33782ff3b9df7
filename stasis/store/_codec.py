"""
How an entry's headers and body are packed into one database value.

LLM answers are small JSON documents that repeat the same field names, so
they are deflated with a preset dictionary of those names (a few hundred
bytes saved on a ~1.5 KB answer), headers and body together in one stream
(the header names compress against each other), with no gzip framing. The
first byte names the format, so older values stay readable: version 1
databases stored a gzip body and the headers as JSON in a column of their own.
"""

from __future__ import annotations

import gzip
import json
import zlib

from stasis.model import StoredRequest

__all__ = ["decode", "decode_request", "encode", "encode_request"]

#: Format of values written now: raw deflate of (headers JSON, NUL, body) with _DICTIONARY.
_PACKED_V1 = b"\x01"
_GZIP_MAGIC = b"\x1f\x8b"

# Deflate looks back over the dictionary, the most useful strings last. Changing
# it makes existing values unreadable: add a new format byte instead.
_DICTIONARY = (
    b'[["content-type", "application/json"], ["content-type", "text/event-stream; charset=utf-8"]'
    b'["x-request-id", "req_"], ["openai-processing-ms", "'
    b'["openai-organization", "'
    b'["openai-version", "2020-10-01"], ["x-ratelimit-limit-requests", "'
    b'["x-ratelimit-remaining-tokens", "'
    b'["request-id", "req_"], ["anthropic-organization-id", "'
    b'["x-amzn-requestid", "'
    b'["x-amzn-bedrock-input-token-count", "'
    b'["x-amzn-bedrock-output-token-count", "'
    b'["server", "cloudflare"], ["cf-ray", "'
    b'{"candidates": [{"content": {"parts": [{"text": "'
    b'"finishReason": "STOP", "usageMetadata": {"promptTokenCount": '
    b'"candidatesTokenCount": , "totalTokenCount": '
    b'{"output": {"message": {"role": "assistant", "content": [{"text": "'
    b'"stopReason": "end_turn", "usage": {"inputTokens": , "outputTokens": , "totalTokens": '
    b'{"id": "msg_", "type": "message", "role": "assistant", "model": "claude-'
    b'"content": [{"type": "text", "text": "'
    b'"stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": '
    b'"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": '
    b'{"id": "resp_", "object": "response", "created_at": , "status": "completed", '
    b'"output": [{"type": "message", "id": "msg_", "status": "completed", '
    b'"content": [{"type": "output_text", "annotations": [], "text": "'
    b'"input_tokens": , "output_tokens": , "total_tokens": '
    b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": ['
    b'data: {"id": "chatcmpl-", "object": "chat.completion.chunk", "created": '
    b'"choices": [{"index": 0, "delta": {"content": "'
    b'}, "logprobs": null, "finish_reason": null}]}\n\ndata: [DONE]\n\n'
    b'{"id": "chatcmpl-", "object": "chat.completion", "created": , "model": "gpt-4o-mini-'
    b'"system_fingerprint": "fp_", "choices": [{"index": 0, "message": {"role": '
    b'"assistant", "content": "", "refusal": null, "annotations": []}, "logprobs": null, '
    b'"finish_reason": "stop"}], "usage": {"prompt_tokens": , "completion_tokens": , '
    b'"total_tokens": , "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}, '
    b'"completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, '
    b'"accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}, '
    b'"service_tier": "default"}'
)


#: Values up to this size are deflated at level 9 (the smallest output); larger
#: ones at level 1. Level 9 searches hardest, which on a large value costs
#: seconds in the commit that readers such as /stats and /health wait for:
#: 18.8 s for 60 MB of chat text (7 MB out), against 0.75 s at level 1 (11 MB).
#: The level is not part of the format: any value inflates the same way.
SMALLEST_OUTPUT_BYTES = 1024 * 1024


def _deflate(plain: bytes) -> bytes:
    level = 9 if len(plain) <= SMALLEST_OUTPUT_BYTES else 1
    packer = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY)
    return _PACKED_V1 + packer.compress(plain) + packer.flush()


def _inflate(value: bytes) -> bytes:
    unpacker = zlib.decompressobj(-15, _DICTIONARY)
    return unpacker.decompress(value[1:]) + unpacker.flush()


def _headers_json(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    return json.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers]).encode()


def _headers_from_json(raw: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in json.loads(raw))


def encode(headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> bytes:
    """One value holding both, compressed."""
    return _deflate(_headers_json(headers) + b"\0" + body)


def decode(value: bytes, legacy_headers: bytes) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """
    The headers and body packed in ``value``.

    ``legacy_headers`` is the separate headers column that version 1 values
    need; values written now leave it empty.
    """
    if value[:1] == _PACKED_V1:
        headers, _, body = _inflate(value).partition(b"\0")
        return _headers_from_json(headers), body
    if value[:2] == _GZIP_MAGIC:
        return _headers_from_json(legacy_headers), gzip.decompress(value)
    raise ValueError("an entry value in an unknown format")


def encode_request(request: StoredRequest) -> bytes:
    """
    A stored request as one value: its facts as JSON, NUL, its body; compressed.

    The facts are the query, the headers and, when there are any, the ignore
    rules its key was derived with (``ignored``): left out when empty, so a
    request without rules packs as it did before they existed.
    """
    facts: dict[str, object] = {
        "query": request.query,
        "headers": [list(pair) for pair in request.headers],
    }
    if request.ignored:
        facts["ignored"] = list(request.ignored)
    return _deflate(json.dumps(facts).encode("ascii") + b"\0" + request.body)


def decode_request(value: bytes) -> StoredRequest:
    """The request :func:`encode_request` packed; one packed before ``ignored`` has none."""
    if value[:1] != _PACKED_V1:
        raise ValueError("a stored request in an unknown format")
    text, _, body = _inflate(value).partition(b"\0")
    facts = json.loads(text)
    return StoredRequest(
        query=facts["query"],
        headers=tuple((name, value) for name, value in facts["headers"]),
        body=body,
        ignored=tuple(facts.get("ignored", ())),
    )
