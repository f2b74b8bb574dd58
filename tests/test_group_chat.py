"""Group chats: who speaks next (natural, list, manual, forced, muted), talkativeness, the group prompt
and speaker names in the history."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.characters import Character
from engine.errors import InvalidInput
from engine.group_chat import (
    DEFAULT_TALKATIVENESS,
    GroupSettings,
    Member,
    group_prompt_prefix,
    group_system_prompt,
    mentioned,
    name_history,
    next_speakers,
    speaker_line,
    strip_speaker,
    talkativeness,
)

NATURAL = GroupSettings()


def members(t: float = 0.0) -> list[Member]:
    return [Member("alice", "Alice", t), Member("bob", "Bob", t), Member("carol", "Carol", t)]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def said(name: str, text: str = "...") -> dict[str, Any]:
    return {"role": "assistant", "content": text, "name": name}


# ---- talkativeness ----------------------------------------------------------------------------------


def card_character(card: dict[str, Any]) -> Character:
    return Character(name="alice", title="Alice", card=card)


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ({"data": {"extensions": {"talkativeness": 0.9}}}, 0.9),
        ({"data": {"extensions": {"talkativeness": "0.25"}}}, 0.25),  # SillyTavern often writes a string
        ({"data": {"extensions": {"talkativeness": " 1 "}}}, 1.0),
        ({"data": {"extensions": {"talkativeness": 0}}}, 0.0),
        ({"data": {"extensions": {"talkativeness": 7}}}, 1.0),  # clamped
        ({"data": {"extensions": {"talkativeness": -3}}}, 0.0),
        ({"data": {"extensions": {"talkativeness": "chatty"}}}, DEFAULT_TALKATIVENESS),
        ({"data": {"extensions": {"talkativeness": True}}}, DEFAULT_TALKATIVENESS),
        ({"data": {"extensions": {"talkativeness": None}}}, DEFAULT_TALKATIVENESS),
        ({"data": {"extensions": {"talkativeness": "nan"}}}, DEFAULT_TALKATIVENESS),
        ({"data": {"extensions": {"talkativeness": "inf"}}}, DEFAULT_TALKATIVENESS),
        ({"data": {"extensions": {"talkativeness": [0.3]}}}, DEFAULT_TALKATIVENESS),
        ({"data": {"extensions": {}}}, DEFAULT_TALKATIVENESS),
        ({"top": {"talkativeness": "0.1"}}, 0.1),  # a V1 card keeps it at the top level
        ({"data": {"extensions": {"talkativeness": 0.8}}, "top": {"talkativeness": 0.1}}, 0.8),
        ({}, DEFAULT_TALKATIVENESS),
    ],
)
def test_talkativeness_is_read_robustly(card: dict[str, Any], expected: float) -> None:
    assert talkativeness(card_character(card)) == expected


def test_talkativeness_of_a_raw_card_and_a_member() -> None:
    raw = {"spec": "chara_card_v2", "talkativeness": "0.2", "data": {"extensions": {"talkativeness": "0.7"}}}
    assert talkativeness(raw) == 0.7
    assert talkativeness({"name": "x", "talkativeness": 0.3}) == 0.3
    assert talkativeness({"data": "not a mapping"}) == DEFAULT_TALKATIVENESS
    m = Member.from_character(card_character({"data": {"extensions": {"talkativeness": 0.9}}}))
    assert m == Member("alice", "Alice", 0.9)
    assert Member("bob").display_name == "bob"


# ---- natural order ----------------------------------------------------------------------------------


def test_natural_order_puts_the_named_characters_first_in_mention_order() -> None:
    history = [said("alice", "Hi!"), user("What do you think, CAROL? And you, alice?")]
    assert next_speakers(members(0.0), history, NATURAL, seed=1) == ["carol", "alice"]


def test_mentions_are_whole_words_by_name_or_display_name() -> None:
    crew = [Member("ali", "Alice Liddell"), Member("bob", "Bob"), Member("r2", "R2-D2")]
    assert mentioned("Bobby and alibi are not names", crew) == []
    assert mentioned("alice liddell, meet r2-d2; ali!", crew) == ["ali", "r2"]
    assert mentioned("…Bob…", crew) == ["bob"]
    assert mentioned("", crew) == []


def test_mentioned_characters_then_the_talkative_ones() -> None:
    crew = [Member("alice", "Alice", 0.0), Member("bob", "Bob", 1.0), Member("carol", "Carol", 0.0)]
    assert next_speakers(crew, [user("carol?")], NATURAL, seed=3) == ["carol", "bob"]


def test_talkativeness_one_always_speaks_and_zero_never_unless_named_forced_or_the_fallback() -> None:
    crew = [Member("alice", "Alice", 1.0), Member("bob", "Bob", 0.0), Member("carol", "Carol", 1.0)]
    for seed in range(200):
        picked = next_speakers(crew, [user("hello")], NATURAL, seed=seed)
        assert sorted(picked) == ["alice", "carol"]
        assert "bob" in next_speakers(crew, [user("hello bob")], NATURAL, seed=seed)
        assert next_speakers(crew, [user("hello")], NATURAL, seed=seed, forced="Bob") == ["bob"]
    # all silent: exactly one speaks (the fallback), and over many seeds each of them does
    seen: Counter[str] = Counter()
    for seed in range(300):
        picked = next_speakers(members(0.0), [user("hello")], NATURAL, seed=seed)
        assert len(picked) == 1
        seen[picked[0]] += 1
    assert set(seen) == {"alice", "bob", "carol"} and min(seen.values()) > 50


def test_talkativeness_is_a_probability() -> None:
    crew = [Member("alice", "Alice", 0.3), Member("bob", "Bob", 0.0)]
    runs = [next_speakers(crew, [user("hi")], NATURAL, seed=s) for s in range(2000)]
    alice = sum("alice" in r for r in runs) / len(runs)
    # alice speaks when drawn (30%) or as the fallback when nobody was drawn (half of the other 70%)
    assert 0.58 < alice < 0.72


def test_the_same_seed_and_history_pick_the_same_speakers() -> None:
    crew = members(0.5)
    history = [user("hi")]
    first = next_speakers(crew, history, NATURAL, seed=42)
    assert all(next_speakers(crew, history, NATURAL, seed=42) == first for _ in range(20))
    outcomes = {tuple(next_speakers(crew, history, NATURAL, seed=s)) for s in range(100)}
    assert len(outcomes) > 3  # the seed matters
    # the RNG is seeded with the history's length too: the next turn is a new draw
    later = {tuple(next_speakers(crew, [*history, said("bob"), user("hi")], NATURAL, seed=42))}
    turns = {tuple(next_speakers(crew, [user("x")] * n, NATURAL, seed=42)) for n in range(1, 60)}
    assert len(turns) > 3 and later


def test_a_character_does_not_answer_itself_unless_allowed() -> None:
    history = [user("hi"), said("bob", "Bob here. Bob likes Bob.")]
    for seed in range(100):
        assert "bob" not in next_speakers(members(1.0), history, NATURAL, seed=seed)
        assert "bob" not in next_speakers(members(0.0), history, NATURAL, seed=seed)
    allowed = GroupSettings(allow_self=True)
    assert next_speakers(members(0.0), history, allowed, seed=1)[0] == "bob"
    # after the user's message, the character who spoke before may answer again
    assert next_speakers(members(0.0), [*history, user("bob?")], NATURAL, seed=1) == ["bob"]
    # the only member who may speak wrote the last message: nobody
    solo = [Member("bob", "Bob", 1.0)]
    assert next_speakers(solo, history, NATURAL, seed=1) == []
    assert next_speakers(solo, history, allowed, seed=1) == ["bob"]


def test_muted_members_never_speak_unless_forced() -> None:
    muted = GroupSettings(muted=["bob", "bob"])
    assert muted.muted == ["bob"]
    for seed in range(100):
        picked = next_speakers(members(1.0), [user("bob, answer!")], muted, seed=seed)
        assert "bob" not in picked and sorted(picked) == ["alice", "carol"]
        assert "bob" not in next_speakers(members(0.0), [user("bob, answer!")], muted, seed=seed)
    assert next_speakers(members(0.0), [user("hi")], muted, seed=1, forced="bob") == ["bob"]
    everyone = GroupSettings(muted=["alice", "bob", "carol"])
    assert next_speakers(members(1.0), [user("hi alice")], everyone, seed=1) == []
    assert next_speakers(members(1.0), [], everyone, seed=1, forced="carol") == ["carol"]


def test_an_empty_history_still_picks_someone() -> None:
    assert len(next_speakers(members(0.0), [], NATURAL, seed=0)) == 1


# ---- list, manual, forced ---------------------------------------------------------------------------


def test_list_order_is_the_member_after_the_last_speaker() -> None:
    order = GroupSettings(order="list")
    crew = members(1.0)
    assert next_speakers(crew, [], order, seed=0) == ["alice"]
    assert next_speakers(crew, [user("hi")], order, seed=0) == ["alice"]
    assert next_speakers(crew, [user("hi"), said("alice")], order, seed=0) == ["bob"]
    assert next_speakers(crew, [said("alice"), said("bob"), user("carol!")], order, seed=0) == ["carol"]
    assert next_speakers(crew, [said("carol")], order, seed=0) == ["alice"]  # wraps around
    skip = GroupSettings(order="list", muted=["bob"])
    assert next_speakers(crew, [said("alice")], skip, seed=0) == ["carol"]
    assert next_speakers(crew, [said("bob")], skip, seed=0) == ["carol"]  # a muted last speaker
    assert next_speakers(crew, [said("stranger")], order, seed=0) == ["alice"]  # a former member
    only = GroupSettings(order="list", muted=["alice", "carol"])
    assert next_speakers(crew, [said("bob")], only, seed=0) == ["bob"]


def test_manual_order_waits_for_the_user() -> None:
    manual = GroupSettings(order="manual")
    assert next_speakers(members(1.0), [user("alice?")], manual, seed=0) == []
    assert next_speakers(members(1.0), [user("alice?")], manual, seed=0, forced="Carol") == ["carol"]


def test_a_forced_speaker_overrides_everything_and_an_unknown_one_names_the_members() -> None:
    history = [said("alice", "me again")]
    for order in ("natural", "list", "manual"):
        group = GroupSettings(order=order)  # type: ignore[arg-type]
        assert next_speakers(members(0.0), history, group, seed=0, forced="alice") == ["alice"]
        assert next_speakers(members(0.0), history, group, seed=0, forced=" ALICE ") == ["alice"]
    crew = [Member("ali", "Alice Liddell")]
    assert next_speakers(crew, [], NATURAL, seed=0, forced="alice liddell") == ["ali"]
    with pytest.raises(InvalidInput) as err:
        next_speakers(members(), [], NATURAL, seed=0, forced="dave")
    assert "'dave'" in err.value.message and "alice, bob, carol" in err.value.message
    assert err.value.field == "speaker"
    with pytest.raises(InvalidInput, match="at least one character"):
        next_speakers([], [], NATURAL, seed=0)


def test_group_settings_are_validated() -> None:
    assert GroupSettings().model_dump() == {
        "order": "natural",
        "muted": [],
        "allow_self": False,
        "prompt": "join",
    }
    with pytest.raises(ValidationError):
        GroupSettings(order="random")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        GroupSettings(prompt="merge")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        GroupSettings.model_validate({"order": "list", "unknown": 1})


names = st.sampled_from(["alice", "bob", "carol", "dave"])
messages = st.one_of(
    st.builds(user, st.text(max_size=40)),
    st.builds(said, names, st.text(max_size=40)),
    st.builds(lambda n: user(f"hey {n}!"), names),
)


@settings(max_examples=300, deadline=None)
@given(
    talk=st.lists(st.floats(0, 1), min_size=3, max_size=3),
    history=st.lists(messages, max_size=6),
    muted=st.lists(names, max_size=3),
    allow_self=st.booleans(),
    order=st.sampled_from(["natural", "list"]),
    seed=st.integers(0, 2**32),
)
def test_speakers_are_always_allowed_members(
    talk: list[float],
    history: list[dict[str, Any]],
    muted: list[str],
    allow_self: bool,
    order: str,
    seed: int,
) -> None:
    crew = [Member(n, n.title(), t) for n, t in zip(("alice", "bob", "carol"), talk, strict=True)]
    group = GroupSettings(order=order, muted=muted, allow_self=allow_self)  # type: ignore[arg-type]
    picked = next_speakers(crew, history, group, seed)
    assert picked == next_speakers(crew, history, group, seed)
    assert len(picked) == len(set(picked))
    assert set(picked) <= {m.name for m in crew} - set(muted)
    active = [m for m in crew if m.name not in muted]
    if order == "natural" and history and not allow_self and history[-1]["role"] == "assistant":
        assert history[-1]["name"] not in picked
    if active and (allow_self or order == "list" or len(active) > 1):
        assert picked


# ---- the prompt -------------------------------------------------------------------------------------


def cast() -> list[Character]:
    return [
        Character(
            name="alice",
            title="Alice",
            description="{{char}} is a barista who talks to {{user}}.",
            personality="cheerful",
            scenario="A café.",
            example_dialogue="<START>\n{{char}}: One latte!",
            system_prompt="Alice's own prompt.",
        ),
        Character(name="bob", title="Bob", description="{{char}} is a programmer.", personality="dry"),
        Character(name="carol", description="Carol opens the shop at six."),
    ]


def test_the_joined_prompt_is_the_same_whoever_speaks_but_its_last_line() -> None:
    kw: dict[str, Any] = {"default_system_prompt": "Write {{char}}'s replies.", "user_name": "Sam"}
    prompts = {c.name: group_system_prompt(cast(), c.name, "join", **kw) for c in cast()}
    prefix = group_prompt_prefix(cast(), **kw)
    for name, prompt in prompts.items():
        label = {"alice": "Alice", "bob": "Bob", "carol": "carol"}[name]
        assert prompt == f"{prefix}\n\n{speaker_line(label)}"
    a = prompts["alice"]
    assert a.startswith("Write Alice, Bob and carol's replies.")
    assert "Alice is a barista who talks to Sam." in a and "Alice's personality: cheerful" in a
    assert "Bob is a programmer." in a and "Bob's personality: dry" in a
    assert "Carol opens the shop at six." in a and "Scenario: A café." in a
    assert "Alice: One latte!" in a
    assert "Alice's own prompt." not in a  # a card's own system prompt applies in swap mode only
    assert a.index("## Alice") < a.index("## Bob") < a.index("## carol")
    assert a.endswith("Write the next reply only as Alice.")
    assert group_system_prompt(cast(), "BOB", **kw) == prompts["bob"]  # join is the default


def test_the_swapped_prompt_holds_only_the_speakers_card() -> None:
    alice = group_system_prompt(cast(), "alice", "swap", user_name="Sam")
    assert alice.startswith("Alice's own prompt.")
    assert "Alice is a barista who talks to Sam." in alice
    assert "programmer" not in alice and "six" not in alice
    assert alice.endswith("Also in this chat: Bob and carol.\n\nWrite the next reply only as Alice.")
    bob = group_system_prompt(cast(), "bob", "swap", system_prompt="Be brief.")
    assert bob.startswith("Be brief.") and "Bob is a programmer." in bob and "barista" not in bob
    solo = group_system_prompt(cast()[:1], "alice", "swap")
    assert "Also in this chat" not in solo


def test_the_prompt_refuses_an_unknown_speaker_or_no_characters() -> None:
    with pytest.raises(InvalidInput, match="alice, bob, carol"):
        group_system_prompt(cast(), "dave")
    with pytest.raises(InvalidInput, match="at least one"):
        group_system_prompt([], "dave")


def test_lore_and_persona_go_in_the_shared_part() -> None:
    from engine.prompt import Placed

    placed = Placed(before=["World: a city."], after=["It rains."], persona="Sam is tall.")
    prompt = group_system_prompt(cast(), "bob", placed=placed)
    assert prompt.index("World: a city.") < prompt.index("## Alice") < prompt.index("It rains.")
    assert prompt.index("It rains.") < prompt.index("Sam is tall.") < prompt.index("Write the next")


# ---- names in the history ---------------------------------------------------------------------------


def test_past_replies_carry_their_speakers_name_for_the_model_only() -> None:
    history = [
        user("hi all"),
        said("alice", "Hello!"),
        said("bob", "Bob: already named"),
        said("bob", "bob:lower case counts too"),
        {"role": "assistant", "content": "no name: a single chat"},
        said("carol", ""),
        {"role": "system", "content": "hidden", "name": "alice"},
    ]
    before = [dict(m) for m in history]
    named = name_history(history, {"alice": "Alice", "bob": "Bob"})
    assert [m["content"] for m in named] == [
        "hi all",
        "Alice: Hello!",
        "Bob: already named",
        "bob:lower case counts too",
        "no name: a single chat",
        "",
        "hidden",
    ]
    assert history == before  # the stored messages are untouched
    assert named[1]["name"] == "alice" and named[1] is not history[1]
    assert name_history([said("carol", "Hi")])[0]["content"] == "carol: Hi"


def test_a_reply_loses_the_name_the_model_wrote_itself() -> None:
    assert strip_speaker("Alice: Hello there", ["Alice", "alice"]) == "Hello there"
    assert strip_speaker("  alice:  Hi", ["Alice"]) == "Hi"
    assert strip_speaker("Alicea: Hi", ["Alice"]) == "Alicea: Hi"
    assert strip_speaker("Bob: Hi", ["Alice"]) == "Bob: Hi"
    assert strip_speaker("Hi", ["", "Alice"]) == "Hi"
