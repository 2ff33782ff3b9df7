"""
:func:`stasis.search.search_text`, what a search looks in: bounded, casefolded,
the answer kept beside a huge prompt, and any entry read without an error.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stasis.model import Entry, EntryFilter, EntryInfo, StoredRequest
from stasis.search import ANSWER_BYTES, SEARCH_TEXT_BYTES, search_text, searchable
from tests.fake_upstream import chat_completion_stream


def chat(prompt: str, answer: str, *, model: str | None = "GPT-4o", **fields: Any) -> Entry:
    return Entry(
        key="00" * 32,
        status=200,
        headers=((b"content-type", b"application/json"),),
        body=json.dumps({"choices": [{"message": {"content": answer}}]}).encode(),
        created_at=1.0,
        provider="openai",
        model=model,
        request=StoredRequest(
            body=json.dumps(
                {"messages": [{"role": "system", "content": "Be brief."}, {"content": prompt}]}
            ).encode()
        ),
        **fields,
    )


def test_the_search_text_is_the_model_the_answer_and_the_messages_last_first() -> None:
    assert search_text(chat("Weather in OSLO?", "Straße")) == (
        "gpt-4o\nstrasse\nweather in oslo?\nbe brief."
    )


def test_a_huge_prompt_is_cut_and_the_answer_kept() -> None:
    text = search_text(chat("x" * 1_000_000, "the answer " * 5000))
    assert len(text.encode()) <= SEARCH_TEXT_BYTES
    assert text.startswith("gpt-4o\nthe answer")
    assert text.count("the answer") == ANSWER_BYTES // len("the answer ")
    assert "xxxx" in text


def test_a_cut_never_splits_a_character() -> None:
    text = search_text(chat("é" * 100_000, ""))
    assert len(text.encode()) <= SEARCH_TEXT_BYTES
    text.encode("utf-8")  # whole characters only


def test_a_long_stream_is_searched_by_its_beginning() -> None:
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi " * 500_000}]}
    body = b"".join(chat_completion_stream(dict(request, stream=True)))
    assert len(body) > 1024 * 1024
    entry = Entry(
        key="00" * 32,
        status=200,
        headers=((b"content-type", b"text/event-stream"),),
        body=body,
        created_at=1.0,
        provider="openai",
        request=StoredRequest(body=json.dumps(request).encode()),
    )
    # The fake upstream sends the echo's prefix, then the rest in one event,
    # which ends past the first MiB: only the prefix is read.
    assert search_text(entry).startswith("\necho #__serial__: \nhi hi")


def test_what_a_database_cannot_hold_is_searched_as_it_is_stored() -> None:
    assert searchable("a\x00b\ud800C") == "a\ufffdb\ufffdc"
    assert EntryFilter(text="\ud800").matches(chat("x\ud800y", ""))
    assert EntryFilter(text="A\x00").matches(chat("a\x00", ""))


def test_a_text_filter_needs_the_entry_not_its_info() -> None:
    entry = chat("hello", "world")
    assert EntryFilter(text="WORLD").matches(entry)
    assert EntryFilter(text="").matches(EntryInfo.of(entry))  # no text: nothing to look in
    with pytest.raises(ValueError, match="needs the entry itself"):
        EntryFilter(text="world").matches(EntryInfo.of(entry))


@settings(max_examples=200, deadline=None)
@given(prompt=st.text(), answer=st.text(), model=st.none() | st.text(), query=st.text(max_size=5))
def test_any_entry_has_a_bounded_search_text_the_filter_agrees_with(
    prompt: str, answer: str, model: str | None, query: str
) -> None:
    entry = chat(prompt, answer, model=model)
    text = search_text(entry)
    assert len(text.encode("utf-8")) <= SEARCH_TEXT_BYTES
    assert searchable(text) == text
    assert EntryFilter(text=query).matches(entry) == (searchable(query) in text)
