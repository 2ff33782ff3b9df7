"""
A stored entry as a person reads it: who said what in the request, and the answer's text.

The web UI shows it, and the store searches it (its ``search_text``), so one
reading serves both. The shapes are told apart by their fields, not by the
entry's provider: Bedrock's InvokeModel carries Anthropic's Messages body,
Azure carries OpenAI's, and a body in no known shape (or not JSON at all, or
hostile) reads as no messages and no answer, never as an error.

Parts that are not text (an image, a tool call, a tool's result) are given as
a short bracketed line, so a person sees that they were there and a search
finds a tool by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from attrs import frozen

from stasis.model import Entry
from stasis.streams.recorded import recorded_events, stream_text

__all__ = ["Conversation", "Message", "conversation"]

#: How much of a tool call's arguments (as JSON) a tool line shows.
TOOL_ARGUMENTS_CHARS = 200


@frozen
class Message:
    """One turn of the request: ``role`` as the API names it (Gemini's ``model``: ``assistant``)."""

    role: str
    text: str


@frozen
class Conversation:
    messages: tuple[Message, ...] = ()
    #: The answer's text (a stream's reassembled); None when it has none to read.
    answer: str | None = None


def conversation(entry: Entry) -> Conversation:
    """What ``entry``'s request said and what its answer says; never raises on a bad body."""
    body = entry.request.body if entry.request is not None else b""
    return Conversation(messages=tuple(_messages(_parse(body))), answer=_answer(entry))


def _parse(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        return None


def _short_json(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return ""
    if len(text) > TOOL_ARGUMENTS_CHARS:
        return text[:TOOL_ARGUMENTS_CHARS] + "…"
    return text


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _part_text(part: Any) -> str:
    """
    One content part of any of the APIs: OpenAI's ``{"type": "text"}`` and
    ``input_text``/``output_text``, Anthropic's blocks, Gemini's parts,
    Bedrock Converse's blocks; a bare string is its own text.
    """
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    if isinstance(part.get("text"), str):
        return str(part["text"])
    kind = _string(part.get("type"))
    if kind == "tool_use":  # Anthropic
        return f"[tool_use {_string(part.get('name'))}] {_short_json(part.get('input'))}"
    if kind == "tool_result":  # Anthropic
        return f"[tool_result] {_content_text(part.get('content'))}"
    if "toolUse" in part:  # Bedrock Converse
        use = part["toolUse"] if isinstance(part["toolUse"], dict) else {}
        return f"[tool_use {_string(use.get('name'))}] {_short_json(use.get('input'))}"
    if "toolResult" in part:  # Bedrock Converse
        result = part["toolResult"] if isinstance(part["toolResult"], dict) else {}
        return f"[tool_result] {_content_text(result.get('content'))}"
    if "functionCall" in part:  # Gemini
        call = part["functionCall"] if isinstance(part["functionCall"], dict) else {}
        return f"[tool_use {_string(call.get('name'))}] {_short_json(call.get('args'))}"
    if "functionResponse" in part:  # Gemini
        response = part["functionResponse"] if isinstance(part["functionResponse"], dict) else {}
        return (
            f"[tool_result {_string(response.get('name'))}] {_short_json(response.get('response'))}"
        )
    if "json" in part:  # a Bedrock tool result's JSON block
        return _short_json(part["json"])
    if kind in ("image", "image_url", "input_image") or "image" in part or "inlineData" in part:
        return "[image]"
    if kind in ("document", "file", "input_file") or "document" in part or "fileData" in part:
        return "[file]"
    return ""


def _content_text(content: Any) -> str:
    """A message's content: a string, or a list of parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text for text in map(_part_text, content) if text)
    if isinstance(content, dict):
        return _part_text(content)
    return ""


def _tool_calls_text(calls: Any) -> str:
    """OpenAI chat's ``tool_calls`` of an assistant message."""
    if not isinstance(calls, list):
        return ""
    lines = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            arguments = _string(function.get("arguments"))[:TOOL_ARGUMENTS_CHARS]
            lines.append(f"[tool_use {_string(function.get('name'))}] {arguments}")
    return "\n".join(lines)


def _role(role: Any, default: str) -> str:
    if not isinstance(role, str) or not role:
        return default
    return "assistant" if role == "model" else role


def _message(item: Any, default_role: str = "user") -> Message | None:
    """A message of OpenAI chat, Anthropic, Bedrock Converse, Gemini or the Responses API."""
    if isinstance(item, str):
        return Message(default_role, item)
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind == "function_call":  # Responses API
        arguments = _string(item.get("arguments"))[:TOOL_ARGUMENTS_CHARS]
        return Message("assistant", f"[tool_use {_string(item.get('name'))}] {arguments}")
    if kind == "function_call_output":  # Responses API
        return Message("tool", f"[tool_result] {_content_text(item.get('output'))}")
    content = item.get("parts") if "parts" in item else item.get("content")
    text = _content_text(content)
    calls = _tool_calls_text(item.get("tool_calls"))
    text = "\n".join(piece for piece in (text, calls) if piece)
    if not text and "role" not in item:
        return None
    return Message(_role(item.get("role"), default_role), text)


def _messages_of(items: Any, default_role: str = "user") -> Iterator[Message]:
    if isinstance(items, str | dict):
        items = [items]
    if not isinstance(items, list):
        return
    for item in items:
        message = _message(item, default_role)
        if message is not None:
            yield message


def _messages(document: Any) -> Iterator[Message]:
    if not isinstance(document, dict):
        return
    for name in ("system", "instructions", "systemInstruction", "system_instruction"):
        value = document.get(name)
        if isinstance(value, dict) and "parts" in value:  # Gemini's: a Content
            value = value["parts"]
        text = _content_text(value)
        if text:
            yield Message("system", text)
    for name in ("messages", "contents"):  # chat, Anthropic, Converse / Gemini
        yield from _messages_of(document.get(name))
    # The Responses API's and embeddings' input, completions' prompt, Titan's inputText.
    for name in ("input", "prompt", "inputText"):
        value = document.get(name)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            yield from (Message("user", text) for text in value)
        else:
            yield from _messages_of(value)
    if "content" in document and "messages" not in document:  # Gemini's embedContent
        yield from _messages_of(document.get("content"))


def _answer(entry: Entry) -> str | None:
    events = recorded_events(entry)
    if events is not None:
        return stream_text(entry, events) or None
    text = _answer_text(_parse(entry.body))
    return text or None


def _answer_text(document: Any) -> str:
    if isinstance(document, list):  # Gemini's streamGenerateContent without alt=sse
        return "".join(_answer_text(element) for element in document if isinstance(element, dict))
    if not isinstance(document, dict):
        return ""
    if isinstance(document.get("output_text"), str):  # Responses (as the SDKs sum it up)
        return str(document["output_text"])
    choices = document.get("choices")
    if isinstance(choices, list):  # chat completions, completions
        texts = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            if isinstance(message, dict):
                texts.append(_content_text(message.get("content")))
            else:
                texts.append(_string(choice.get("text")))
        return "\n".join(text for text in texts if text)
    output = document.get("output")
    if isinstance(output, list):  # Responses: message items' output_text parts
        return "\n".join(
            _content_text(item.get("content"))
            for item in output
            if isinstance(item, dict) and item.get("type") == "message"
        )
    if isinstance(output, dict) and isinstance(output.get("message"), dict):  # Bedrock Converse
        return _content_text(output["message"].get("content"))
    candidates = document.get("candidates")
    if isinstance(candidates, list):  # Gemini: the first candidate's text, thoughts left out
        first = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        content = first.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            return "".join(
                str(part["text"])
                for part in parts
                if isinstance(part, dict)
                and isinstance(part.get("text"), str)
                and not part.get("thought")
            )
        return ""
    if document.get("type") == "message" and isinstance(document.get("content"), list):
        return _content_text(document["content"])  # Anthropic Messages
    for name in ("completion", "generation", "outputText"):  # legacy Claude, Llama, Titan
        if isinstance(document.get(name), str):
            return str(document[name])
    return ""
