"""Lorebook formats: SillyTavern world-info JSON round trips, character_book V2/V3 import, the store,
and hypothesis on the importer: any input gives a book or a clear error, never a crash."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.cards import add_text_chunks, placeholder_png
from engine.errors import InvalidInput, NotFound, TooLarge
from engine.lore_store import LorebookStore, check_book_name
from engine.lorebook import (
    book_from_character_book,
    book_from_obj,
    parse_book,
    to_character_book,
    to_world_info,
    world_info_json,
)

DATA = Path(__file__).parent / "data" / "lore"
WORLD = (DATA / "eldoria_world_info.json").read_bytes()
CARD = (DATA / "mira_card.json").read_bytes()


def test_world_info_round_trip_is_exact_including_unknown_fields() -> None:
    original = json.loads(WORLD)
    original["entries"]["0"]["futureField"] = {"nested": [1, 2.5, None, "x"]}
    original["futureTop"] = "kept"
    book = parse_book(json.dumps(original).encode())
    assert to_world_info(book) == original
    assert json.loads(world_info_json(parse_book(world_info_json(book)))) == original


def test_a_sparse_world_info_file_gains_defaults_but_keeps_its_values() -> None:
    book = parse_book(b'{"entries": {"7": {"key": ["a"], "content": "x", "order": 3.5}}}')
    entry = to_world_info(book)["entries"]["7"]
    assert entry["uid"] == 7 and entry["key"] == ["a"] and entry["order"] == 3.5
    assert entry["position"] == 0 and entry["probability"] == 100 and entry["selectiveLogic"] == 0


def test_character_book_v2_is_converted_like_sillytavern_does() -> None:
    book = parse_book(CARD, "mira_card.json")  # a card: its book is taken
    assert book.name == "Mira's notes" and book.scan_depth == 3 and book.token_budget == 500
    compass = book.entries["1"]
    assert compass.key == ["compass"] and compass.position == 4 and compass.depth == 1 and compass.order == 50
    assert book.entries["2"].position == 0  # before_char
    assert book.entries["3"].disable is True  # enabled: false
    assert book.entries["4"].caseSensitive is True


def test_character_book_round_trip_keeps_what_world_info_has_no_field_for() -> None:
    card = json.loads(CARD)
    original = card["data"]["character_book"]
    back = to_character_book(book_from_character_book(original))
    assert back["extensions"] == {"custom": 1} and back["scan_depth"] == 3
    assert back["entries"][0]["name"] == "Compass" and back["entries"][0]["priority"] == 10
    for before, after in zip(original["entries"], back["entries"], strict=True):
        assert after["keys"] == before["keys"] and after["content"] == before["content"]
        assert after["enabled"] == before["enabled"] and after["insertion_order"] == before["insertion_order"]
        for key, value in before["extensions"].items():
            assert after["extensions"][key] == value


def test_v3_card_and_png_card_books() -> None:
    card = json.loads(CARD)
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {**card["data"], "group_only_greetings": []},
    }
    v3["data"]["character_book"]["entries"][0]["use_regex"] = True
    v3_book = book_from_obj(v3)
    assert len(v3_book.entries) == 4
    # use_regex has no world-info field: kept with the entry (the scanner reads it), and exported again
    first = next(iter(v3_book.entries.values()))
    assert first.extra_fields()["card_entry"]["use_regex"] is True
    assert to_character_book(v3_book)["entries"][0]["use_regex"] is True
    png = add_text_chunks(placeholder_png("Mira"), {"chara": base64.b64encode(CARD).decode()})
    assert len(parse_book(png, "mira.png").entries) == 4


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00", "UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"entries": 3}', "entries"),
        (b'{"entries": {"0": []}}', "entries['0']"),
        (b'{"entries": {"x": {"key": []}}}', "uid"),
        (b'{"entries": {"0": {"uid": 0, "key": "a", "order": "high"}}}', "order"),
        (b'{"entries": {"0": {"uid": 0, "selectiveLogic": 9}}}', "selectiveLogic"),
        (b'{"entries": {"0": {"uid": 0, "key": [1]}}}', "key"),
        (b'{"spec": "chara_card_v2", "data": {"name": "x"}}', "no character_book"),
        (b'{"entries": [{"keys": ["a"], "content": 5}]}', "content"),
        (b'{"entries": {}} trailing', "not valid JSON"),
        (b"\x89PNG\r\n\x1a\n", "PNG without character data"),
    ],
)
def test_malformed_files_get_a_clear_error(data: bytes, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_book(data, "f.json")
    assert words in exc.value.message


def test_too_large() -> None:
    with pytest.raises(TooLarge):
        parse_book(b" " * (10 * 1024 * 1024 + 1))


# --- hypothesis: the importer never crashes and never loses what it accepted ----------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "uid",
    "key",
    "keysecondary",
    "content",
    "order",
    "position",
    "selectiveLogic",
    "probability",
    "depth",
    "role",
    "group",
    "scanDepth",
    "caseSensitive",
    "constant",
    "disable",
    "delayUntilRecursion",
]
entry_like = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=8)
world_like = st.fixed_dictionaries(
    {
        "entries": st.dictionaries(
            st.from_regex(r"[0-9]{1,3}", fullmatch=True) | st.text(max_size=4), entry_like, max_size=4
        )
    }
) | st.dictionaries(st.text(max_size=8), json_values, max_size=4)
card_like = st.fixed_dictionaries(
    {
        "spec": st.just("chara_card_v2"),
        "data": st.fixed_dictionaries(
            {
                "character_book": st.fixed_dictionaries(
                    {
                        "entries": st.lists(
                            st.dictionaries(
                                st.sampled_from(
                                    [
                                        "keys",
                                        "content",
                                        "id",
                                        "enabled",
                                        "extensions",
                                        "insertion_order",
                                        "position",
                                    ]
                                ),
                                json_values,
                            ),
                            max_size=4,
                        )
                    }
                )
            }
        ),
    }
)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _check(data: bytes) -> None:
    """The parser and the store's import agree: a book, stored and read back whole, or a clear error and
    nothing written."""
    with tempfile.TemporaryDirectory() as tmp:
        store = LorebookStore(Path(tmp))
        try:
            book = parse_book(data, "fuzz.json")
        except (InvalidInput, TooLarge) as exc:
            assert exc.message and "Traceback" not in exc.message
            with pytest.raises(type(exc)) as again_exc:
                store.import_bytes("fuzz.json", data)
            assert again_exc.value.message and "Traceback" not in again_exc.value.message
            assert _files(Path(tmp)) == []  # a bad file writes nothing
            return
        again = parse_book(world_info_json(book), "again.json")
        assert to_world_info(again) == to_world_info(book)  # what was accepted survives a round trip
        name, stored = store.import_bytes("fuzz.json", data)
        assert _files(Path(tmp)) == [store.folder / f"{name}.json"]
        assert to_world_info(store.get(name)) == to_world_info(stored) == to_world_info(book)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_like | card_like)
@example({"entries": {"²": {}}})  # a superscript digit: str.isdigit() says yes, int() refuses it
def test_fuzz_structured_inputs(obj: Any) -> None:
    _check(json.dumps(obj).encode())


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_raw_bytes(data: bytes) -> None:
    _check(data)


# --- the store ------------------------------------------------------------------------------------------


def test_store_import_get_put_delete(tmp_path: Path) -> None:
    store = LorebookStore(tmp_path)
    name, book = store.import_bytes("Eldoria.json", WORLD)
    assert name == "Eldoria" and len(book.entries) == 19
    assert store.import_bytes("Eldoria.json", WORLD)[0] == "Eldoria (2)"  # never overwrites
    assert store.import_bytes("mira.json", CARD)[0] == "Mira's notes"
    assert json.loads(store.export_bytes("Eldoria")) == json.loads(WORLD)
    store.delete("Eldoria (2)")
    assert store.names() == ["Eldoria", "Mira's notes"]
    assert (tmp_path / "trash" / "lorebooks" / "Eldoria (2).json").is_file()
    with pytest.raises(NotFound):
        store.get("Eldoria (2)")


def test_a_bad_import_writes_nothing(tmp_path: Path) -> None:
    store = LorebookStore(tmp_path)
    with pytest.raises(InvalidInput):
        store.import_bytes("bad.json", b'{"entries": {"0": {"uid": -1}}}')
    assert not (tmp_path / "lorebooks").exists() or not any((tmp_path / "lorebooks").iterdir())


@pytest.mark.parametrize("name", ["", " x", "x ", "../x", "a/b", "a\\b", ".hidden", "x" * 101, "a\nb", "a:b"])
def test_book_names_cannot_leave_the_folder(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_book_name(name)


def test_book_names_may_be_any_printable_text() -> None:
    for name in ("Eldoria", "Mira's notes (2)", "東京の本", "Book #1"):
        assert check_book_name(name) == name
