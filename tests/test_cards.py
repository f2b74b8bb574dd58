"""Character card codecs: fixtures from other projects, every spec variant, PNG chunk kinds, and fuzzing."""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import cards
from engine.characters import Character
from engine.errors import InvalidInput, TooLarge
from engine.text import clean_line
from tests.helpers import require

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared/fixtures/cards"


def fixture_bytes(name: str) -> bytes:
    path = FIXTURES / name
    require(FIXTURES.is_dir(), f"card fixtures not found at {FIXTURES}")
    return path.read_bytes()


def chunk_json(png: bytes, keyword: str) -> Any:
    text = cards.card_texts(png)[keyword]
    assert isinstance(text, str)
    return json.loads(base64.b64decode(text))


def dumps(obj: Any) -> str:
    """Exact serialisation, key order included: equal strings mean byte-for-byte equal sub-objects."""
    return json.dumps(obj, ensure_ascii=False)


# --- helpers to build cards ---------------------------------------------------------------------------

TINY_PNG = cards.placeholder_png("T", size=(8, 8))


def b64(obj: Any) -> bytes:
    return base64.b64encode(json.dumps(obj, ensure_ascii=False).encode()).decode().encode()


def text_chunk(keyword: str, payload: bytes) -> bytes:
    return cards.make_chunk(b"tEXt", keyword.encode() + b"\0" + payload)


def ztxt_chunk(keyword: str, payload: bytes) -> bytes:
    return cards.make_chunk(b"zTXt", keyword.encode() + b"\0\0" + zlib.compress(payload))


def itxt_chunk(keyword: str, payload: bytes, compressed: bool = False) -> bytes:
    body = zlib.compress(payload) if compressed else payload
    flag = b"\1\0" if compressed else b"\0\0"
    return cards.make_chunk(b"iTXt", keyword.encode() + b"\0" + flag + b"en\0" + b"\0" + body)


def png_with(before_idat: Sequence[bytes] = (), after_idat: Sequence[bytes] = ()) -> bytes:
    """TINY_PNG with extra raw chunks placed before the first IDAT and after the last one."""
    parts = [cards.PNG_SIGNATURE]
    for ctype, body in cards.iter_chunks(TINY_PNG):
        if ctype == b"IDAT":
            parts.extend(before_idat)
            before_idat = ()
        if ctype == b"IEND":
            parts.extend(after_idat)
        parts.append(cards.make_chunk(ctype, body))
    return b"".join(parts)


def v2_card(name: str = "Aiko", **data: Any) -> dict[str, Any]:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": name, **data}}


FULL_V2 = v2_card(
    "Aiko Tanaka",
    description="{{char}} is a librarian.",
    personality="quiet, kind",
    scenario="A library at night.",
    first_mes="Welcome, {{user}}.",
    mes_example="<START>\n{{user}}: Hi\n{{char}}: Shh.",
    creator_notes="For testing.",
    system_prompt="{{original}} Stay in character.",
    post_history_instructions="Reply in one paragraph.",
    alternate_greetings=["Oh, hello.", "Back again?"],
    tags=["library", "test"],
    creator="tester",
    character_version="1.2",
    extensions={"depth_prompt": {"prompt": "x", "depth": 4}, "fav": True, "z": [1, 2.5, None]},
    character_book={"name": "Lore", "entries": [{"keys": ["a"], "content": "b", "extensions": {"q": 1}}]},
    some_future_field={"nested": ["kept"]},
)


# --- fixtures from other projects ---------------------------------------------------------------------


def test_seraphina_png_imports() -> None:
    data = fixture_bytes("default_Seraphina.png")
    imported = cards.parse_card(data, "default_Seraphina.png")
    c = imported.character
    assert imported.source == "PNG (chara) chara_card_v2"
    assert (c.name, c.title) == ("Seraphina", "Seraphina")
    assert c.greeting.startswith("*You wake with a start")
    assert c.creator_notes.startswith("ST Default Bot")
    assert c.card["data"]["character_book"]["name"] == "Eldoria"
    assert c.card["data"]["extensions"]["world"] == "Eldoria"
    # The avatar is the same image without the card chunk.
    assert imported.avatar_png is not None
    assert cards.card_texts(imported.avatar_png) == {}
    with Image.open(io.BytesIO(imported.avatar_png)) as img:
        assert img.size == (400, 600)


def test_seraphina_exports_losslessly() -> None:
    data = fixture_bytes("default_Seraphina.png")
    original = chunk_json(data, "chara")
    c = cards.parse_card(data).character
    exported = cards.to_v2(c)
    assert exported == original  # every field, top-level extras (avatar, chat, fav, ...) included
    for key in ("extensions", "character_book"):
        assert dumps(exported["data"][key]) == dumps(original["data"][key])
    assert json.loads(cards.card_json(c)) == original


def test_seraphina_png_round_trip_carries_both_chunks() -> None:
    data = fixture_bytes("default_Seraphina.png")
    original = chunk_json(data, "chara")
    imported = cards.parse_card(data)
    png = cards.card_png(imported.character, imported.avatar_png)
    assert chunk_json(png, "chara") == original
    v3 = chunk_json(png, "ccv3")
    assert (v3["spec"], v3["spec_version"]) == ("chara_card_v3", "3.0")
    assert dumps(v3["data"]["character_book"]) == dumps(original["data"]["character_book"])
    assert dumps(v3["data"]["extensions"]) == dumps(original["data"]["extensions"])
    again = cards.parse_card(png)
    assert again.source.startswith("PNG (ccv3)")
    assert again.character == imported.character
    # The image data itself is untouched.
    idat = [b for t, b in cards.iter_chunks(data) if t == b"IDAT"]
    assert [b for t, b in cards.iter_chunks(png) if t == b"IDAT"] == idat


def test_tgw_yaml_imports_and_exports() -> None:
    c = cards.parse_card(fixture_bytes("tgw_Example.yaml"), "tgw_Example.yaml").character
    assert (c.name, c.title) == ("Chiharu_Yamada", "Chiharu Yamada")
    assert c.description.startswith("Chiharu Yamada's Persona:")
    assert c.greeting.startswith("*Chiharu strides") and c.greeting.endswith("Let's get started!")
    assert c.example_dialogue.startswith("{{user}}: So how did you get into computer engineering?")
    data = json.loads(cards.card_json(c))["data"]
    assert (data["name"], data["description"], data["first_mes"], data["mes_example"]) == (
        c.title,
        c.description,
        c.greeting,
        c.example_dialogue,
    )
    assert cards.parse_card(cards.card_json(c)).character == c
    assert cards.parse_card(cards.card_png(c)).character == c


def test_pygmalion_json_imports_and_exports() -> None:
    raw = fixture_bytes("pygmalion_Example.json")
    original = json.loads(raw)
    c = cards.parse_card(raw, "pygmalion_Example.json").character
    assert c.title == original["char_name"]
    assert c.description == original["char_persona"]
    assert c.greeting == original["char_greeting"]
    assert c.example_dialogue == original["example_dialogue"]
    assert c.scenario == original["world_scenario"] == ""
    data = cards.to_v2(c)["data"]
    assert data["first_mes"] == original["char_greeting"]
    assert cards.parse_card(cards.card_json(c)).character == c
    assert cards.parse_card(cards.card_png(c)).character == c


# --- every spec variant -------------------------------------------------------------------------------


def test_v1_json() -> None:
    v1 = {
        "name": "Old Bot",
        "description": "d",
        "personality": "p",
        "scenario": "s",
        "first_mes": "hello",
        "mes_example": "<START>ex",
        "metadata": {"x": 1},
    }
    c = cards.parse_card(json.dumps(v1).encode(), "old.json").character
    assert (c.name, c.title, c.greeting, c.example_dialogue) == ("Old_Bot", "Old Bot", "hello", "<START>ex")
    out = cards.to_v2(c)
    assert out["metadata"] == {"x": 1}
    assert {k: out[k] for k in cards.V1_FIELDS} == {k: v1[k] for k in cards.V1_FIELDS}


def test_v2_json_every_field() -> None:
    c = cards.parse_card(json.dumps(FULL_V2).encode(), "aiko.json").character
    assert c.title == "Aiko Tanaka" and c.name == "Aiko_Tanaka"
    assert c.greeting == "Welcome, {{user}}."
    assert c.alternate_greetings == ["Oh, hello.", "Back again?"]
    assert c.post_history_instructions == "Reply in one paragraph."
    out = cards.to_v2(c)
    assert out["data"] == FULL_V2["data"]
    for key in ("extensions", "character_book", "some_future_field"):
        assert dumps(out["data"][key]) == dumps(FULL_V2["data"][key])


def test_v2_tolerates_null_and_missing_fields() -> None:
    card = v2_card(
        "Nully", description=None, personality=None, alternate_greetings=None, tags=None, extensions=None
    )
    c = cards.parse_card(json.dumps(card).encode()).character
    assert (c.description, c.alternate_greetings, c.tags) == ("", [], [])
    minimal = cards.parse_card(json.dumps(v2_card("Min")).encode()).character
    assert minimal.title == "Min" and minimal.greeting == ""
    out = cards.to_v2(minimal)["data"]
    assert out["creator"] == "" and out["extensions"] == {} and out["alternate_greetings"] == []


def test_v3_json_keeps_v3_fields() -> None:
    v3_extra = {
        "nickname": "Ai",
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "creator_notes_multilingual": {"ja": "テスト"},
        "source": ["https://example.invalid/aiko"],
        "group_only_greetings": ["Hello, everyone."],
        "creation_date": 1700000000,
        "modification_date": 1700000001,
    }
    card = {
        **FULL_V2,
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {**FULL_V2["data"], **v3_extra},
    }
    c = cards.parse_card(json.dumps(card, ensure_ascii=False).encode(), "aiko3.json").character
    assert c.title == "Aiko Tanaka"
    v3 = cards.to_v3(c)
    assert v3["spec"] == "chara_card_v3" and v3["data"] == card["data"]
    for key in (*v3_extra, "extensions", "character_book"):
        assert dumps(v3["data"][key]) == dumps(card["data"][key])


def test_v3_without_group_only_greetings_gets_the_default() -> None:
    c = cards.parse_card(json.dumps(v2_card("A")).encode()).character
    assert cards.to_v3(c)["data"]["group_only_greetings"] == []
    assert "group_only_greetings" not in cards.to_v2(c)["data"]


def test_our_sampling_survives_a_card_round_trip() -> None:
    c = Character(name="x", title="X", sampling={"temperature": 0.2, "stop": ["\n\n"]})
    out = cards.to_v2(c)
    assert out["data"]["extensions"][cards.APP_KEY] == {"sampling": {"temperature": 0.2, "stop": ["\n\n"]}}
    back = cards.parse_card(cards.card_json(c)).character
    assert back.sampling == c.sampling and back.card == {}


def test_bad_sampling_in_card_extensions_is_invalid_input() -> None:
    card = v2_card("A", extensions={cards.APP_KEY: {"sampling": {"warp_speed": 9}}})
    with pytest.raises(InvalidInput, match="warp_speed"):
        cards.parse_card(json.dumps(card).encode())


def test_our_preset_yaml_imports() -> None:
    text = "name: My Bot\ngreeting: hi {{user}}\nsampling:\n  temperature: 0.5\navatar: gone.png\n"
    c = cards.parse_card(text.encode(), "bot.yaml").character
    assert (c.name, c.title, c.greeting, c.avatar, c.sampling) == (
        "My_Bot",
        "My Bot",
        "hi {{user}}",
        None,
        {"temperature": 0.5},
    )


def test_tags_as_comma_text_are_split() -> None:
    c = cards.parse_card(json.dumps(v2_card("A", tags="a, b,c")).encode()).character
    assert c.tags == ["a", "b", "c"]


# --- PNG chunk kinds ----------------------------------------------------------------------------------

CARD = v2_card("Pixel", first_mes="beep")


@pytest.mark.parametrize(
    ("label", "png"),
    [
        ("tEXt before IDAT", png_with(before_idat=[text_chunk("chara", b64(CARD))])),
        ("tEXt after IDAT", png_with(after_idat=[text_chunk("chara", b64(CARD))])),
        ("zTXt", png_with(after_idat=[ztxt_chunk("chara", b64(CARD))])),
        ("iTXt", png_with(before_idat=[itxt_chunk("chara", b64(CARD))])),
        ("iTXt compressed", png_with(after_idat=[itxt_chunk("chara", b64(CARD), compressed=True)])),
        ("iTXt raw JSON", png_with(after_idat=[itxt_chunk("chara", json.dumps(CARD).encode())])),
        (
            "base64 with newlines",
            png_with(after_idat=[text_chunk("chara", b64(CARD)[:20] + b"\n" + b64(CARD)[20:])]),
        ),
        ("keyword case", png_with(after_idat=[text_chunk("Chara", b64(CARD))])),
        ("data after IEND", png_with(after_idat=[text_chunk("chara", b64(CARD))]) + b"trailing junk"),
    ],
)
def test_png_chunk_variants(label: str, png: bytes) -> None:
    imported = cards.parse_card(png, "pixel.png")
    assert (imported.character.title, imported.character.greeting) == ("Pixel", "beep"), label
    assert imported.avatar_png is not None and cards.card_texts(imported.avatar_png) == {}


@pytest.mark.parametrize("ccv3_first", [True, False])
def test_ccv3_wins_over_chara(ccv3_first: bool) -> None:
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {"name": "Three", "group_only_greetings": []},
    }
    chunks = [text_chunk("chara", b64(v2_card("Two"))), itxt_chunk("ccv3", b64(v3))]
    png = png_with(after_idat=chunks[::-1] if ccv3_first else chunks)
    imported = cards.parse_card(png)
    assert imported.character.title == "Three"
    assert imported.source == "PNG (ccv3) chara_card_v3"


def test_broken_ccv3_falls_back_to_chara() -> None:
    png = png_with(
        after_idat=[text_chunk("ccv3", b"!!not base64!!"), text_chunk("chara", b64(v2_card("Two")))]
    )
    assert cards.parse_card(png).character.title == "Two"


def test_export_png_has_both_chunks_and_reads_back() -> None:
    c = cards.parse_card(json.dumps(FULL_V2).encode()).character
    png = cards.card_png(c)  # no image: a placeholder
    with Image.open(io.BytesIO(png)) as img:
        img.load()
    assert chunk_json(png, "chara") == cards.to_v2(c)
    assert chunk_json(png, "ccv3") == cards.to_v3(c)
    assert cards.parse_card(png).character == c
    # Exporting an exported card replaces its chunks instead of adding more.
    png2 = cards.card_png(c, png)
    keywords = [b.split(b"\0")[0] for t, b in cards.iter_chunks(png2) if t == b"tEXt"]
    assert sorted(keywords) == [b"ccv3", b"chara"]


def test_export_png_converts_other_image_formats() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (5, 7), "red").save(buf, "JPEG")
    png = cards.card_png(Character(name="a", title="A"), buf.getvalue())
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (5, 7)
    assert cards.parse_card(png).character.title == "A"


def test_placeholder_is_deterministic() -> None:
    assert cards.placeholder_png("ツンデレちゃん") == cards.placeholder_png("ツンデレちゃん")


# --- errors -------------------------------------------------------------------------------------------

ALIAS_BOMB = b'a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\x00\xff\xfe\x01binary", "neither a PNG image nor UTF-8"),
        (b"\xff\xd8\xff\xe0JFIF", "JPEG image"),
        (TINY_PNG, "no 'chara' or 'ccv3'"),
        (TINY_PNG[:40], "truncated"),
        (png_with(after_idat=[text_chunk("chara", b"%%%")]), "not base64"),
        (png_with(after_idat=[text_chunk("chara", base64.b64encode(b"not json"))]), "not valid JSON"),
        (png_with(after_idat=[ztxt_chunk("chara", b"")[:-8] + b"garbage!"]), "corrupt"),
        (b"[1, 2]", "got a list"),
        (b'{"spec": "chara_card_v9", "data": {}}', "unsupported card spec"),
        (b'{"spec": "chara_card_v2", "data": "x"}', "needs a 'data' object"),
        (b'{"spec": "chara_card_v2", "data": {"first_mes": "hi"}}', "no character name"),
        (
            b'{"spec": "chara_card_v2", "data": {"name": "a", "first_mes": ["x"]}}',
            "'data.first_mes' should be text",
        ),
        (
            b'{"spec": "chara_card_v2", "data": {"name": "a", "tags": {"x": 1}}}',
            "'data.tags' should be a list",
        ),
        (b'{"name": "a", "first_mes": NaN}', "NaN is not a valid JSON value"),
        (b'{"name": "a", "first_mes": "\\ud800"}', "unpaired surrogate"),
        (b'{"name": "a", "first_mes": "x"', "not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
        (b"{'a': 1}", "not valid JSON"),
        (b"just some words", "got text"),
        (b"foo: [unclosed", "not valid YAML"),
        (ALIAS_BOMB, "aliases"),
        (b"hello: 1\nworld: 2\n", "not a recognised character format"),
        (b"name: x\nbogus_field: 1\n", "unknown field 'bogus_field'"),
    ],
)
def test_broken_input_is_invalid_input_with_a_reason(data: bytes, expected: str) -> None:
    with pytest.raises(InvalidInput) as info:
        cards.parse_card(data, "card.bin")
    assert expected in info.value.message
    assert "Traceback" not in info.value.message


def test_too_large() -> None:
    with pytest.raises(TooLarge, match="10 MB"):
        cards.parse_card(b"{" + b" " * (10 * 1024 * 1024), "big.json")


def test_zip_bomb_chunk_is_too_large() -> None:
    png = png_with(after_idat=[ztxt_chunk("chara", b"A" * (11 * 1024 * 1024))])
    with pytest.raises(TooLarge, match="decompresses to more than 10 MB"):
        cards.parse_card(png)


def test_error_names_the_file_without_control_characters() -> None:
    with pytest.raises(InvalidInput) as info:
        cards.parse_card(b"[]", "../../evil\x00\n.json")
    assert "'evil??.json'" in info.value.message


# --- fuzzing: only InvalidInput or TooLarge may ever escape --------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    [*cards.CARD_FIELDS, *cards.TAVERN_FIELDS, *cards.TGW_FIELDS, "extensions", "character_book", "data"]
    + [*Character.model_fields, "spec", "spec_version"]
)
card_dicts = st.dictionaries(field_names, json_values, max_size=8)
envelopes = st.one_of(
    card_dicts,
    card_dicts.map(lambda d: {"spec": "chara_card_v2", "spec_version": "2.0", "data": d}),
    card_dicts.map(lambda d: {"spec": "chara_card_v3", "spec_version": "3.0", "data": d}),
    card_dicts.map(lambda d: {"spec": "chara_card_v2", "data": {"name": "N", **d}}),
)


def parse_quietly(data: bytes, filename: str = "f") -> None:
    try:
        result = cards.parse_card(data, filename)
    except (InvalidInput, TooLarge) as exc:
        assert exc.message and "Traceback" not in exc.message
        return
    # Whatever parses must also export.
    cards.to_v2(result.character)
    cards.to_v3(result.character)


@FUZZ
@given(st.binary(max_size=2000), st.text(max_size=30))
def test_fuzz_arbitrary_bytes(data: bytes, filename: str) -> None:
    parse_quietly(data, filename)


@FUZZ
@given(envelopes, st.sampled_from(["json", "yaml"]))
def test_fuzz_card_structures(obj: dict[str, Any], kind: str) -> None:
    data = json.dumps(obj).encode() if kind == "json" else yaml.safe_dump(obj, allow_unicode=True).encode()
    parse_quietly(data)


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_text(text: str) -> None:
    parse_quietly(text.encode("utf-8", "surrogatepass"))


chunk_types = st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"IDAT", b"IEND", b"abcd"])
keywords = st.sampled_from([b"chara", b"ccv3", b"CCV3", b"other", b""])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(chunk_types, keywords, st.binary(max_size=200)), max_size=5), st.booleans())
def test_fuzz_png_chunks(chunks: list[tuple[bytes, bytes, bytes]], after: bool) -> None:
    raw = [cards.make_chunk(t, k + b"\0" + body) for t, k, body in chunks]
    parse_quietly(png_with(after_idat=raw) if after else png_with(before_idat=raw))


GOOD_PNG = png_with(
    after_idat=[itxt_chunk("ccv3", b64(FULL_V2), compressed=True), text_chunk("chara", b64(CARD))]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD_PNG) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_png(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(GOOD_PNG)
    for pos, value in mutations:
        data[pos] = value
    parse_quietly(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(GOOD_PNG)))
def test_fuzz_truncated_png(cut: int) -> None:
    parse_quietly(GOOD_PNG[:cut])


texts = st.text(max_size=60)


@settings(max_examples=100, deadline=None)
@given(
    title=texts.filter(clean_line),  # a title of control characters only is no title (engine/text.py)
    description=texts,
    greeting=texts,
    alternates=st.lists(texts.filter(bool), max_size=3),
    extensions=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_round_trip_property(
    title: str, description: str, greeting: str, alternates: list[str], extensions: dict[str, Any]
) -> None:
    card = v2_card(title, description=description, first_mes=greeting, alternate_greetings=alternates)
    card["data"]["extensions"] = extensions
    c = cards.parse_card(json.dumps(card).encode()).character
    assert cards.parse_card(cards.card_json(c)).character == c
    assert dumps(cards.to_v2(c)["data"]["extensions"]) == dumps(extensions)
