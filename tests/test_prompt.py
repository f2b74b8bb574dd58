"""Prompt assembly: macros, block order, history filtering and a stable system message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.characters import Character, character_from_yaml
from engine.prompt import assemble, content_text, greetings, render_macros, split_examples, system_message

SHIPPED = Path(__file__).resolve().parents[1] / "presets"

FULL = Character(
    name="aiko",
    title="Aiko",
    description="{{char}} is a librarian who helps {{user}}.",
    personality="quiet, kind to <USER>",
    scenario="<BOT> and {{User}} meet at the library.",
    system_prompt="{{original}} You are {{char}}.",
    greeting="Welcome, {{user}}.",
    alternate_greetings=["Back again, {{user}}?", "", "Shh, <USER>."],
    example_dialogue=(
        "<START>\n{{user}}: Hi\n{{char}}: Shh.\n<start>\n\n<START>\n{{user}}: Books?\n{{char}}: Aisle 3."
    ),
    post_history_instructions="Stay in character as {{char}}; reply to {{user}} briefly.",
    creator_notes="SECRET CREATOR NOTE",
    sampling={"temperature": 0.5},
)
HISTORY: list[dict[str, Any]] = [
    {"role": "assistant", "content": "Welcome, Ken.", "time": 1, "metrics": {"x": 1}},
    {"role": "user", "content": "Hello"},
    {"role": "system", "content": "ignored"},
    {"role": "tool", "content": "ignored too"},
    {"role": "assistant", "content": "Shh."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Where "}, {"type": "image_url"}, {"type": "text", "text": "?"}],
    },
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{char}} greets {{user}}", "Aiko greets Ken"),
        ("{{CHAR}} / {{User}} / {{ char }}", "Aiko / Ken / Aiko"),
        ("<BOT> and <USER>, <bot>", "Aiko and Ken, Aiko"),
        ("{{original}}!", "ORIG!"),
        ("{{char", "{{char"),
        ("{{charlie}}", "{{charlie}}"),
        ("", ""),
    ],
)
def test_render_macros(text: str, expected: str) -> None:
    assert render_macros(text, "Aiko", "Ken", original="ORIG") == expected


def test_render_macros_does_not_expand_replacements() -> None:
    assert render_macros("{{user}} and {{char}}", "{{user}}", "{{char}}") == "{{char}} and {{user}}"


def test_original_is_empty_by_default() -> None:
    assert render_macros("a{{original}}b", "c", "u") == "ab"


def test_split_examples() -> None:
    assert split_examples(FULL.example_dialogue) == [
        "{{user}}: Hi\n{{char}}: Shh.",
        "{{user}}: Books?\n{{char}}: Aisle 3.",
    ]
    assert split_examples("no markers") == ["no markers"]
    assert split_examples("<START>\n\n<START>") == []


def test_assemble_with_every_field() -> None:
    messages = assemble(FULL, HISTORY, default_system_prompt="Be helpful.", user_name="Ken")
    system = messages[0]
    assert system["role"] == "system"
    text = system["content"]
    parts = [
        "Be helpful. You are Aiko.",
        "Aiko is a librarian who helps Ken.",
        "Aiko's personality: quiet, kind to Ken",
        "Scenario: Aiko and Ken meet at the library.",
        "Example dialogue between Aiko and Ken",
        "<example>\nKen: Hi\nAiko: Shh.\n</example>",
        "<example>\nKen: Books?\nAiko: Aisle 3.\n</example>",
    ]
    positions = [text.index(p) for p in parts]
    assert positions == sorted(positions)
    assert text.startswith(parts[0])
    assert "SECRET" not in text and "{{" not in text and "<START>" not in text.upper()
    assert messages[1:-1] == [
        {"role": "assistant", "content": "Welcome, Ken."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Shh."},
        {"role": "user", "content": "Where ?"},
    ]
    assert messages[-1] == {"role": "system", "content": "Stay in character as Aiko; reply to Ken briefly."}
    assert all(set(m) == {"role", "content"} for m in messages)
    assert all("SECRET" not in m["content"] for m in messages)


def test_override_system_prompt_wins() -> None:
    text = system_message(FULL, system_prompt="Custom for {{char}}.", default_system_prompt="Default.")
    assert text.startswith("Custom for Aiko.\n\nAiko is a librarian")


def test_default_system_prompt_when_card_has_none() -> None:
    c = FULL.model_copy(update={"system_prompt": "  "})
    assert system_message(c, default_system_prompt="Default.").startswith("Default.\n\n")


def test_original_only_means_something_in_the_system_prompt() -> None:
    c = Character(name="a", description="desc {{original}}", system_prompt="sys {{original}}")
    text = system_message(c, default_system_prompt="DEF")
    assert text == "sys DEF\n\ndesc"


def test_no_character() -> None:
    history = [{"role": "user", "content": "hi"}]
    assert assemble(None, history, default_system_prompt="Default.") == [
        {"role": "system", "content": "Default."},
        {"role": "user", "content": "hi"},
    ]
    custom = assemble(
        None, history, system_prompt="I am {{char}}, {{user}}.", user_name="Ken", assistant_name="Bot"
    )
    assert custom[0] == {"role": "system", "content": "I am Bot, Ken."}
    assert assemble(None, history) == history  # nothing to say: no empty system message


def test_minimal_character_has_no_empty_blocks() -> None:
    c = Character(name="a", system_prompt="Only this.")
    assert assemble(c, []) == [{"role": "system", "content": "Only this."}]


def test_system_message_is_stable_as_history_grows() -> None:
    turns: list[dict[str, str]] = []
    previous: list[dict[str, str]] = []
    for i in range(6):
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"})
        messages = assemble(FULL, turns, default_system_prompt="D", user_name="Ken")
        assert messages == assemble(FULL, list(turns), default_system_prompt="D", user_name="Ken")
        # Everything before the new turn (and the trailing note) is unchanged: the prefix cache holds.
        if previous:
            assert messages[: len(previous) - 1] == previous[:-1]
        previous = messages


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=80))
def test_render_macros_never_fails(char: str, user: str, text: str) -> None:
    out = render_macros(text, char, user)
    if not any(m in text.lower() for m in ("{{", "<bot>", "<user>")):
        assert out == text


def test_greetings() -> None:
    assert greetings(FULL, "Ken") == ["Welcome, Ken.", "Back again, Ken?", "Shh, Ken."]
    assert greetings(Character(name="a"), "Ken") == []
    assert greetings(None) == []


def test_content_text() -> None:
    assert content_text(None) == "" and content_text("x") == "x" and content_text(3) == "3"


def test_shipped_tsundere_renders_in_japanese() -> None:
    c = character_from_yaml((SHIPPED / "tsundere.yaml").read_bytes(), "tsundere")
    messages = assemble(c, [{"role": "user", "content": "こんにちは"}], user_name="ケン")
    assert "ツンデレちゃん" in messages[0]["content"] and "{{" not in messages[0]["content"]
    assert "ケン" in messages[0]["content"]
    assert greetings(c, "ケン")[0].startswith("べ、別に")
