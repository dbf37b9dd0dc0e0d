from __future__ import annotations

import pytest

from src.domain.task_token import TaskToken, mask_token
from tests.unit.builders import RAW_TOKEN

MASKED = "AAAAKgAA...********...AAAA"


def test_str_shows_first_8_and_last_4_characters_only():
    assert str(TaskToken(RAW_TOKEN)) == MASKED


def test_repr_is_masked():
    assert repr(TaskToken(RAW_TOKEN)) == f"TaskToken({MASKED})"
    assert RAW_TOKEN not in repr(TaskToken(RAW_TOKEN))


def test_f_string_and_format_are_masked():
    token = TaskToken(RAW_TOKEN)
    assert f"{token}" == MASKED
    assert format(token) == MASKED
    assert "token=%s" % token == f"token={MASKED}"  # noqa: UP031 (stdlib logging's style)
    assert "%r" % (token,) == f"TaskToken({MASKED})"  # noqa: UP031


def test_a_container_holding_the_token_does_not_leak_it():
    assert RAW_TOKEN not in repr([TaskToken(RAW_TOKEN)])
    assert RAW_TOKEN not in str({"token": TaskToken(RAW_TOKEN)})


def test_reveal_gives_the_raw_value():
    assert TaskToken(RAW_TOKEN).reveal() == RAW_TOKEN


def test_masked_property_matches_mask_token():
    assert TaskToken(RAW_TOKEN).masked == mask_token(RAW_TOKEN) == MASKED


def test_empty_token_is_refused():
    with pytest.raises(ValueError):
        TaskToken("")


@pytest.mark.parametrize("raw", ["x", "short-tok", "exactly12chr"])
def test_short_tokens_are_fully_masked(raw: str):
    assert str(TaskToken(raw)) == "********"
    assert repr(TaskToken(raw)) == "TaskToken(********)"


def test_tokens_with_the_same_value_are_equal():
    assert TaskToken(RAW_TOKEN) == TaskToken(RAW_TOKEN)
    assert TaskToken(RAW_TOKEN) != TaskToken(RAW_TOKEN + "x")
