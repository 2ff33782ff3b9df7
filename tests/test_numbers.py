"""Numbers read from headers and bodies: never an exception, never more than their use holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stasis.numbers import LARGEST_COUNT, whole_number
from stasis.providers._base import int_field


@given(
    number=st.integers(min_value=0, max_value=10**40), cap=st.integers(min_value=1, max_value=2**64)
)
def test_a_whole_number_is_read_and_clamped(number: int, cap: int) -> None:
    assert whole_number(str(number), cap) == min(number, cap)
    assert whole_number("000" + str(number), cap) == min(number, cap)


@given(text=st.text(max_size=30))
def test_anything_but_ascii_digits_is_no_number(text: str) -> None:
    if not (text.isascii() and text.isdigit()):
        assert whole_number(text, 100) is None


def test_a_run_of_digits_longer_than_python_converts_is_the_cap() -> None:
    assert whole_number("9" * 100_000, 2**31) == 2**31
    assert whole_number("0" * 100_000 + "7", 2**31) == 7
    assert whole_number("٣", 10) is None  # a digit, but not an ASCII one


def test_token_counts_from_a_body_are_finite_and_bounded() -> None:
    assert int_field({"n": float("inf")}, "n") == 0
    assert int_field({"n": float("nan")}, "n") == 0
    assert int_field({"n": 10**30}, "n") == LARGEST_COUNT
    assert int_field({"n": -5}, "n") == 0
    assert int_field({"n": 12.9}, "n") == 12
