"""Lorebook activation, entry by entry, against SillyTavern's rules (docs: Usage/worldinfo.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.config import LoreSettings
from engine.lore_keys import match_key, parse_regex_key
from engine.lore_scan import Activation, ScanInput, Source, activate, parse_decorators
from engine.lorebook import Book, book_from_obj, book_from_world_info

DATA = Path(__file__).parent / "data" / "lore"


def words(text: str) -> int:
    """A stand-in tokenizer for budget tests: one token per word, plus one for the newline."""
    return len(text.split()) + 1


def book(*entries: dict[str, Any], **top: Any) -> Book:
    return book_from_world_info({"entries": {str(e["uid"]): e for e in entries}, **top}, "test book")


def e(uid: int, key: list[str] | None = None, content: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"uid": uid, "key": key or [], "content": content or f"content {uid}", **kw}


def run(
    *books: Book | Source,
    chat: list[str] | None = None,
    settings: LoreSettings | None = None,
    **scan: Any,
) -> Activation:
    sources = [b if isinstance(b, Source) else Source(f"b{i}", b) for i, b in enumerate(books)]
    msgs = [("User" if i % 2 == 0 else "Bot", text) for i, text in enumerate(chat or [])]
    return activate(sources, ScanInput(messages=msgs, **scan), settings or LoreSettings(), words)


def fired(act: Activation) -> list[int]:
    return [f.uid for f in act.fired]


def why(act: Activation) -> dict[int, str]:
    return {f.uid: f.why for f in act.fired}


# --- keys ------------------------------------------------------------------------------------------------


def test_keys_are_case_insensitive_by_default_and_case_sensitive_on_request() -> None:
    b = book(e(0, ["Dragon"]), e(1, ["Dragon"], caseSensitive=True))
    assert fired(run(b, chat=["a dragon!"])) == [0]
    assert fired(run(b, chat=["a Dragon!"])) == [0, 1]
    assert fired(run(b, chat=["a DRAGON"], settings=LoreSettings(case_sensitive=True))) == []


def test_whole_words_by_default_and_substrings_when_off() -> None:
    b = book(e(0, ["king"]), e(1, ["king"], matchWholeWords=False))
    assert fired(run(b, chat=["I'm liking it"])) == [1]
    assert fired(run(b, chat=["long live the king."])) == [0, 1]
    assert fired(run(b, chat=["liking"], settings=LoreSettings(match_whole_words=False))) == [0, 1]


def test_multi_word_keys_match_as_substrings_even_with_whole_words() -> None:
    b = book(e(0, ["silver guard"]))
    assert fired(run(b, chat=["the silver guardians"])) == [0]


def test_whole_word_boundary_is_ascii_so_japanese_text_around_a_key_counts_as_a_boundary() -> None:
    b = book(e(0, ["Tokyo"]), e(1, ["東京"]))
    assert fired(run(b, chat=["私はTokyoに行く"])) == [0]
    assert fired(run(b, chat=["東京に行く"])) == [1]


def test_regex_keys_with_flags() -> None:
    b = book(e(0, ["/drag(on|ons)\\b/"]), e(1, ["/DRAGON/i"]), e(2, ["/\\x01Bot:[^\\x01]*hi/"]))
    assert fired(run(b, chat=["two dragons", "x"])) == [0, 1]
    assert fired(run(b, chat=["Dragon"])) == [1]  # no i flag: the first is case-sensitive
    # each message starts with \x01, so a regex can tell who said what (SillyTavern's per-message matching)
    assert fired(run(b, chat=["x", "oh hi"])) == [2]
    assert fired(run(b, chat=["hi", "x"])) == []


def test_regex_key_parsing_follows_javascript_delimiters() -> None:
    assert parse_regex_key("/a/gi") is not None
    assert parse_regex_key("/a/x") is None  # not a JavaScript flag: plain text
    assert parse_regex_key("/a/b/") is None  # an unescaped slash inside
    assert parse_regex_key("/a\\/b/") is not None
    assert parse_regex_key("/(unclosed/") is None  # invalid syntax: plain text
    assert match_key("see /(unclosed/ here", "/(unclosed/", case_sensitive=False, whole_words=False)


def test_a_catastrophic_regex_key_times_out_with_a_warning_instead_of_hanging() -> None:
    b = book(e(0, ["/(a|aa)+$/"]), e(1, ["fine"]))
    act = run(b, chat=["a" * 40 + "! fine"], settings=LoreSettings(regex_timeout_s=0.05))
    assert fired(act) == [1]
    assert any("took too long" in w for w in act.warnings)


def test_macros_in_keys_are_rendered() -> None:
    b = book(e(0, ["{{char}}"]))
    assert fired(run(b, chat=["hello Mira"], render=lambda s: s.replace("{{char}}", "Mira"))) == [0]


def test_names_are_scanned_unless_include_names_is_off() -> None:
    b = book(e(0, ["Bot"]))
    assert fired(run(b, chat=["hi", "hello"])) == [0]
    assert fired(run(b, chat=["hi", "hello"], settings=LoreSettings(include_names=False))) == []


# --- secondary keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logic", "text", "expected"),
    [
        (0, "sword ancient", True),  # AND ANY: one of them
        (0, "sword", False),
        (3, "sword ancient broken", True),  # AND ALL
        (3, "sword ancient", False),
        (2, "sword", True),  # NOT ANY: none of them
        (2, "sword broken", False),
        (1, "sword ancient", True),  # NOT ALL: not every one
        (1, "sword ancient broken", False),
    ],
)
def test_secondary_key_logic(logic: int, text: str, expected: bool) -> None:
    b = book(e(0, ["sword"], keysecondary=["ancient", "broken"], selectiveLogic=logic))
    assert (fired(run(b, chat=[text])) == [0]) is expected


def test_secondary_keys_are_ignored_when_the_entry_is_not_selective() -> None:
    b = book(e(0, ["sword"], keysecondary=["ancient"], selective=False))
    assert fired(run(b, chat=["a sword"])) == [0]


# --- scan depth ----------------------------------------------------------------------------------------


def test_scan_depth_global_book_and_entry() -> None:
    chat = ["the lighthouse", "a", "b"]
    assert fired(run(book(e(0, ["lighthouse"])), chat=chat)) == []  # default depth 2
    assert fired(run(book(e(0, ["lighthouse"]), scan_depth=3), chat=chat)) == [0]
    assert fired(run(book(e(0, ["lighthouse"], scanDepth=3)), chat=chat)) == [0]
    assert fired(run(book(e(0, ["lighthouse"], scanDepth=1), scan_depth=3), chat=chat)) == []
    assert fired(run(book(e(0, ["lighthouse"])), chat=chat, settings=LoreSettings(scan_depth=3))) == [0]


def test_scan_depth_zero_scans_no_messages_but_still_recursion() -> None:
    b = book(e(0, [], "about Rufus", constant=True), e(1, ["Rufus"]), e(2, ["cat"]))
    act = run(b, chat=["a cat"], settings=LoreSettings(scan_depth=0))
    assert fired(act) == [0, 1]


# --- constant, disabled, probability -------------------------------------------------------------------


def test_constant_always_in_and_disabled_never() -> None:
    b = book(e(0, constant=True), e(1, ["x"], disable=True), e(2, [], constant=True, disable=True))
    assert fired(run(b, chat=["x"])) == [0]
    assert why(run(b, chat=[]))[0] == "constant"


def test_probability_is_drawn_from_the_seed() -> None:
    b = book(*(e(i, ["x"], probability=50) for i in range(40)))
    first = fired(run(b, chat=["x"], seed=7))
    assert first == fired(run(b, chat=["x"], seed=7))  # the same seed, the same entries
    assert 5 < len(first) < 35
    assert first != fired(run(b, chat=["x"], seed=8))


def test_probability_zero_and_use_probability_off() -> None:
    b = book(e(0, ["x"], probability=0), e(1, ["x"], probability=0, useProbability=False))
    assert fired(run(b, chat=["x"], seed=1)) == [1]


# --- recursion -----------------------------------------------------------------------------------------


def test_recursion_activates_entries_named_in_activated_content() -> None:
    b = book(e(0, ["Bessie"], "Bessie is friends with Rufus."), e(1, ["Rufus"], "Rufus is a dog."))
    act = run(b, chat=["I met Bessie"])
    assert fired(act) == [0, 1]
    assert why(act) == {0: "Bessie", 1: "recursion"}
    assert fired(run(b, chat=["I met Bessie"], settings=LoreSettings(recursive=False))) == [0]


def test_exclude_recursion_and_prevent_recursion() -> None:
    b = book(
        e(0, ["Bessie"], "Bessie knows Rufus and Tom."),
        e(1, ["Rufus"], "Rufus.", excludeRecursion=True),
        e(2, ["Tom"], "Tom knows Ann.", preventRecursion=True),
        e(3, ["Ann"], "Ann."),
    )
    assert fired(run(b, chat=["Bessie"])) == [0, 2]  # Rufus: not by recursion; Ann: Tom does not recurse
    assert fired(run(b, chat=["Bessie and Rufus"])) == [0, 1, 2]  # Rufus straight from the chat is fine


def test_max_recursion_steps_limits_the_passes() -> None:
    b = book(e(0, ["a1"], "a2"), e(1, ["a2"], "a3"), e(2, ["a3"], "a4"))
    assert fired(run(b, chat=["a1"])) == [0, 1, 2]
    assert fired(run(b, chat=["a1"], settings=LoreSettings(max_recursion_steps=2))) == [0, 1]


def test_delay_until_recursion_waits_for_a_recursive_pass() -> None:
    b = book(e(0, ["dog"], "the dog barks", delayUntilRecursion=True), e(1, ["cat"], "a cat and a dog"))
    assert fired(run(book(e(0, ["dog"], delayUntilRecursion=True)), chat=["dog"])) == []
    assert fired(run(b, chat=["cat dog"])) == [1, 0]


# --- groups and budget ---------------------------------------------------------------------------------


def test_inclusion_group_keeps_one_winner() -> None:
    b = book(e(0, ["w"], group="weather"), e(1, ["w"], group="weather"), e(2, ["w"], group="other"))
    for seed in range(10):
        got = fired(run(b, chat=["w"], seed=seed))
        assert 2 in got and len([u for u in got if u in (0, 1)]) == 1


def test_inclusion_group_prioritised_entry_with_highest_order_wins() -> None:
    b = book(
        e(0, ["w"], group="g", order=10),
        e(1, ["w"], group="g", groupOverride=True, order=5),
        e(2, ["w"], group="g", groupOverride=True, order=7),
    )
    assert fired(run(b, chat=["w"])) == [2]


def test_group_weights_follow_the_seed_and_a_zero_weight_never_wins() -> None:
    b = book(e(0, ["w"], group="g", groupWeight=0), e(1, ["w"], group="g", groupWeight=100))
    assert {tuple(fired(run(b, chat=["w"], seed=s))) for s in range(20)} == {(1,)}


def test_group_scoring_keeps_entries_matching_most_keys() -> None:
    b = book(
        e(0, ["song", "sing", "Black Cat"], group="songs"),
        e(1, ["song", "sing", "Ghosts"], group="songs"),
    )
    scored = LoreSettings(group_scoring=True)
    assert {
        tuple(fired(run(b, chat=["sing me a song about Ghosts"], settings=scored, seed=s))) for s in range(8)
    } == {(1,)}


def test_a_group_already_won_in_an_earlier_pass_takes_no_more() -> None:
    b = book(e(0, ["w"], "about fog", group="g"), e(1, ["fog"], group="g"))
    assert fired(run(b, chat=["w"])) == [0]


def test_budget_constant_first_then_by_order() -> None:
    b = book(
        e(0, ["x"], "one two three", order=10),
        e(1, [], "four five six", constant=True, order=1),
        e(2, ["x"], "seven eight nine", order=50),
    )
    # budget 9 tokens (words + 1 each): the constant (4), then order 50 (4), then order 10 does not fit
    act = run(b, chat=["x"], settings=LoreSettings(budget_percent=100, budget_tokens=9), context_size=1000)
    assert fired(act) == [1, 2]
    assert act.overflowed and act.warnings


def test_budget_as_share_of_context() -> None:
    b = book(e(0, ["x"], "a " * 30), e(1, ["x"], "b"))
    act = run(b, chat=["x"], settings=LoreSettings(budget_percent=10), context_size=100)
    assert act.budget == 10
    assert fired(act) == []  # the first (by order, then uid) does not fit, and activation stops there


# --- order, strategy, filters --------------------------------------------------------------------------


def test_character_book_first_by_default_and_other_strategies() -> None:
    char = Source("char", book(e(0, ["x"], order=1)), character=True)
    attached = Source("world", book(e(0, ["x"], order=99)))
    assert [f.book for f in run(char, attached, chat=["x"]).fired] == ["char", "world"]
    evenly = run(char, attached, chat=["x"], settings=LoreSettings(strategy="evenly")).fired
    assert [f.book for f in evenly] == ["world", "char"]
    glob = run(char, attached, chat=["x"], settings=LoreSettings(strategy="global_first")).fired
    assert [f.book for f in glob] == ["world", "char"]


def test_triggers_character_filter_delay_and_decorators() -> None:
    b = book(
        e(0, ["x"], triggers=["impersonate"]),
        e(1, ["x"], characterFilter={"names": ["Mira"], "isExclude": False}),
        e(2, ["x"], characterFilter={"names": ["Mira"], "isExclude": True}),
        e(3, ["x"], delay=3),
        e(4, [], "@@activate\nalways"),
        e(5, ["x"], "@@dont_activate\nnever"),
    )
    assert fired(run(b, chat=["x"], character_names=("Mira",))) == [1, 4]
    assert fired(run(b, chat=["x", "y", "x"], trigger="impersonate")) == [0, 2, 3, 4]
    assert run(b, chat=[]).fired[0].content == "always"


def test_additional_matching_sources() -> None:
    b = book(e(0, ["sailor"], matchPersonaDescription=True), e(1, ["sailor"]))
    assert fired(run(b, chat=["hi"], extra_text={"persona_description": "Ken is a sailor."})) == [0]


def test_decorator_parsing() -> None:
    assert parse_decorators("@@activate\n@@unknown\ntext") == (["@@activate"], "text")
    assert parse_decorators("plain") == ([], "plain")


def test_javascript_key_order_breaks_ties_between_equal_orders() -> None:
    b = book_from_obj({"entries": {"10": e(10, ["x"]), "2": e(2, ["x"]), "a": e(3, ["x"])}})
    assert fired(run(b, chat=["x"])) == [2, 10, 3]


# --- a real book -----------------------------------------------------------------------------------------

CHAT = [
    ("Ken", "Tell me about the lighthouse."),
    ("Mira", "It is very old."),
    (
        "Ken",
        "I'm liking this trip to Eldoria. Is queen Maren kind? The weather turns. I found an old map and "
        "an ancient sword. ASH sent word of dragons near the tavern. Tell me a riddle.",
    ),
    ("Mira", "Hush, that is a secret. Mind the curfew."),
]


def test_real_world_info_file_activates_what_sillytavern_would() -> None:
    world = book_from_obj(json.loads((DATA / "eldoria_world_info.json").read_text("utf-8")))
    act = activate([Source("Eldoria", world)], ScanInput(messages=CHAT), LoreSettings(), words)
    got = {f.uid: f.why for f in act.fired}
    assert got == {
        0: "Eldoria",
        3: "Maren",
        4: "/drag(on|ons)\\b/i",
        5: "constant",
        7: "ASH",
        8: "tavern",
        10: "weather",  # the prioritised one of the "weather" group
        12: "lighthouse",  # scanDepth 10 reaches the first message
        15: "map",
        16: "riddle",
        17: "curfew",
        18: "secret",
        1: "recursion",  # Highspire, named by Eldoria's entry
    }
    # not: 2 (excludeRecursion), 6 (disabled), 9 (lost its group), 11 (probability 0), 13 ("liking" is not
    # the word "king"), 14 (AND ALL: no "broken")
    assert [f.uid for f in act.fired][-1] == 1  # recursion comes in a later pass
    places = {f.uid: f.where for f in act.fired}
    assert places[3] == "at depth 2 as system" and places[18] == "at depth 0 as assistant"
    assert places[16] == "examples_top" and places[17] == "an_top" and places[1] == "after_char"


def test_real_card_book_with_a_world_book_attached() -> None:
    from engine.cards import parse_card
    from engine.lorebook import character_book_of

    character = parse_card((DATA / "mira_card.json").read_bytes(), "mira_card.json").character
    own = character_book_of(character.card, character.display_name)
    assert own is not None and own.scan_depth == 3 and len(own.entries) == 4
    world = book_from_obj(json.loads((DATA / "eldoria_world_info.json").read_text("utf-8")))
    act = activate(
        [Source("Mira (character)", own, character=True), Source("Eldoria", world)],
        ScanInput(messages=CHAT, character_names=(character.name,)),
        LoreSettings(),
        words,
    )
    mira = {f.uid: f.why for f in act.fired if f.book == "Mira (character)"}
    # "Mira" is found through the speaker names; "Queen" (case-sensitive) only in Eldoria's "Queen Maren"
    # entry, by recursion; the compass is never mentioned and the ink entry is disabled
    assert mira == {2: "Mira", 4: "recursion"}
    keyed = [f.book for f in act.fired if f.why != "constant"]
    assert keyed[0] == "Mira (character)"  # after constant entries, the character's book comes first


# --- a card's character_book settings (V2/V3) ----------------------------------------------------------


def card_book(*entries: dict[str, Any], **top: Any) -> Book:
    """A character_book as a V2/V3 card embeds it."""
    return book_from_obj(
        {"spec": "chara_card_v3", "data": {"name": "C", "character_book": {"entries": list(entries), **top}}}
    )


def ce(i: int, keys: list[str], content: str, **kw: Any) -> dict[str, Any]:
    return {"id": i, "keys": keys, "content": content, "enabled": True, "insertion_order": 100 - i, **kw}


def test_a_books_token_budget_caps_its_own_entries_and_not_the_others() -> None:
    """Before: a character_book's token_budget was imported and never used."""
    own = card_book(
        ce(0, ["x"], "one two three"),  # 4 tokens (words + 1)
        ce(1, ["x"], "four five six"),  # 4 more: over the book's 6
        ce(2, ["x"], "seven"),  # 2: still fits (4 + 2 = 6)
        token_budget=6,
    )
    world = book(e(0, ["x"], "eight nine ten eleven"), e(1, ["x"], "twelve thirteen"))
    act = run(Source("char", own, character=True), Source("world", world), chat=["x"])
    assert [(f.book, f.uid) for f in act.fired] == [("char", 0), ("char", 2), ("world", 0), ("world", 1)]
    assert any("'char' reached its own token budget (6 tokens)" in w for w in act.warnings)
    assert not act.overflowed  # the overall budget is not spent
    no_cap = card_book(ce(0, ["x"], "one two three"), ce(1, ["x"], "four five six"), token_budget=0)
    assert fired(run(no_cap, chat=["x"])) == [0, 1]  # 0: no cap of its own
    # the overall budget still applies on top of the book's
    act = run(own, chat=["x"], settings=LoreSettings(budget_percent=100, budget_tokens=5), context_size=99)
    assert fired(act) == [0] and act.overflowed


def test_a_book_with_recursive_scanning_off_neither_recurses_nor_is_recursed_into() -> None:
    """Before: recursive_scanning: false was imported and ignored."""
    entries = (ce(0, ["Bessie"], "Bessie is friends with Rufus."), ce(1, ["Rufus"], "Rufus is a dog."))
    assert fired(run(card_book(*entries, recursive_scanning=True), chat=["I met Bessie"])) == [0, 1]
    off = card_book(*entries, recursive_scanning=False)
    assert fired(run(off, chat=["I met Bessie"])) == [0]
    assert fired(run(off, chat=["Bessie and Rufus"])) == [0, 1]  # straight from the chat is fine
    # its content activates nothing in another book, and another book's content does not reach into it
    world = book(e(0, ["Rufus"], "Rufus chases Tom."))
    assert [(f.book, f.uid) for f in run(off, world, chat=["I met Bessie"]).fired] == [("b0", 0)]
    tom = card_book(ce(0, ["Tom"], "Tom."), recursive_scanning=False)
    assert [(f.book, f.uid) for f in run(world, tom, chat=["Rufus"]).fired] == [("b0", 0)]


def test_v3_use_regex_entries_take_their_keys_as_regular_expressions() -> None:
    """Before: a V3 entry's use_regex was kept for export but its keys were matched as plain text."""
    b = card_book(
        ce(0, ["drag(on|ons)"], "a", use_regex=True),
        ce(1, ["drag(on|ons)"], "b"),  # no use_regex: the literal text
        ce(2, ["^\\W*ink$|qu[ie]ll"], "c", use_regex=True),
        ce(3, ["Queen"], "d", use_regex=True, case_sensitive=True),
        ce(4, ["(unclosed"], "e", use_regex=True),  # not valid syntax: plain text
        ce(5, ["secondary"], "f", use_regex=True, selective=True, secondary_keys=["gr[ae]y"]),
    )
    assert fired(run(b, chat=["Two dragons and a quill, a (unclosed bracket"])) == [0, 2, 4]
    assert fired(run(b, chat=["drag(on|ons) queen"])) == [1]
    assert fired(run(b, chat=["the Queen said secondary grey"])) == [3, 5]
    assert fired(run(b, chat=["secondary green"])) == []
