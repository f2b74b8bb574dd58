"""Character <-> text form fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.character_form import (
    FORM_FIELDS,
    character_from_form,
    form_from_character,
    join_greetings,
    parse_sampling,
    parse_tags,
    split_greetings,
    unique_name,
)
from engine.characters import Character
from engine.errors import InvalidInput


def test_round_trip_through_the_form() -> None:
    c = Character(
        name="pirate",
        title="Pirate Pete",
        description="Arr.",
        greeting="Ahoy!",
        alternate_greetings=["Yo ho.", "Line one\nline two"],
        tags=["sea", "fun"],
        sampling={"temperature": 0.9, "stop": ["###"]},
        avatar="pirate.png",
        card={"data": {"extensions": {"x": 1}}},
    )
    form = form_from_character(c)
    assert set(form) == set(FORM_FIELDS)
    assert form["alternate_greetings"] == "Yo ho.\n---\nLine one\nline two"
    assert form["tags"] == "sea, fun"
    back = character_from_form(form, base=c)
    assert back == c  # avatar and card data come from the base


def test_split_and_join_greetings() -> None:
    assert split_greetings("a\n---\n\n  ---  \nb\n--- \nc") == ["a", "b", "c"]
    assert split_greetings("") == []
    assert split_greetings("keep --- inline") == ["keep --- inline"]
    assert split_greetings(join_greetings(["x", "y"])) == ["x", "y"]


def test_tags_and_sampling_text() -> None:
    assert parse_tags("a, b\nA ,, c ") == ["a", "b", "c"]
    assert parse_sampling("") == {} and parse_sampling("# nothing") == {}
    assert parse_sampling('{"temperature": 0.5}') == {"temperature": 0.5}
    assert parse_sampling("top_k: 3") == {"top_k": 3}
    with pytest.raises(InvalidInput) as err:
        parse_sampling("- 1\n- 2")
    assert err.value.field == "sampling"
    with pytest.raises(InvalidInput):
        parse_sampling("a: [")


def test_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        character_from_form({"name": "bad name!"})
    assert err.value.field == "name"
    with pytest.raises(InvalidInput) as err:
        character_from_form({"name": "ok", "sampling": "temperature: 9"})
    assert "sampling.temperature" in err.value.message
    with pytest.raises(InvalidInput):
        character_from_form({"name": "ok", "sampling": "temprature: 1"})


def test_unique_name() -> None:
    assert unique_name([], "Pirate Pete") == "Pirate_Pete"
    assert unique_name(["pirate_pete", "Pirate_Pete-2"], "Pirate Pete") == "Pirate_Pete-3"
    assert unique_name(["x"], "") == "character"


@given(st.lists(st.text(min_size=1).filter(lambda t: t.strip() and "---" not in t), max_size=5))
def test_greetings_survive_the_text_form(greetings: list[str]) -> None:
    stripped = [g.strip() for g in greetings]
    assert split_greetings(join_greetings(greetings)) == stripped
