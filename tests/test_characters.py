"""The Character model, its YAML form, PresetStore, and the shipped presets."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import cards
from engine.characters import Character, character_from_yaml, character_to_yaml, safe_name
from engine.errors import InvalidInput, NotFound, TooLarge
from engine.preset_store import PresetStore
from tests.helpers import require

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "presets"
FIXTURES = REPO.parent / "shared/fixtures/cards"
EXPECTED_PRESETS = {
    "tsundere",
    "friendly",
    "technical_expert",
    "translator",
    "teacher",
    "storyteller",
    "concise",
}


def fixture_bytes(name: str) -> bytes:
    require(FIXTURES.is_dir(), f"card fixtures not found at {FIXTURES}")
    return (FIXTURES / name).read_bytes()


def write_preset(folder: Path, name: str, **fields: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        yaml.safe_dump({"name": name, **fields}, allow_unicode=True), "utf-8"
    )


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "shipped"
    write_preset(folder, "alpha", title="Alpha", greeting="Hi")
    write_preset(folder, "beta", title="Beta", sampling={"temperature": 0.1})
    return folder


@pytest.fixture
def store(tmp_path: Path, shipped: Path) -> PresetStore:
    return PresetStore(shipped, tmp_path / "user", tmp_path / "trash")


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


# --- the model ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "tsundere", "Technical_Expert-2", "x" * 64, "0"])
def test_valid_names(name: str) -> None:
    assert Character(name=name).name == name


BAD_NAMES = [
    "",
    "../x",
    "..",
    ".",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "a\0b",
    "x" * 65,
    ".hidden",
    "a b",
    "é",
    "a.yaml",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidInput, match="not a valid preset name"):
        Character.from_dict({"name": name})


def test_unknown_field_is_named() -> None:
    with pytest.raises(InvalidInput, match="unknown field 'greting'"):
        Character.from_dict({"name": "a", "greting": "hi"})


def test_unknown_sampling_names_are_listed() -> None:
    with pytest.raises(InvalidInput) as info:
        Character.from_dict({"name": "a", "sampling": {"temperature": 0.5, "warp": 1, "tempreature": 2}})
    assert "warp, tempreature" in info.value.message and "Known: temperature" in info.value.message
    assert info.value.field == "sampling"


def test_sampling_bounds_are_checked() -> None:
    with pytest.raises(InvalidInput, match="sampling.temperature"):
        Character.from_dict({"name": "a", "sampling": {"temperature": 9}})


def test_sampling_is_normalised_and_keeps_only_overrides() -> None:
    c = Character(name="a", sampling={"top_k": 10, "stop": "###"})
    assert c.sampling == {"top_k": 10, "stop": ["###"]}


@pytest.mark.parametrize("avatar", ["../x.png", "/tmp/x.png", "a/b.png", "x.exe", "x", "bad name.png"])
def test_avatar_must_be_a_plain_image_name(avatar: str) -> None:
    with pytest.raises(InvalidInput, match="avatar"):
        Character.from_dict({"name": "a", "avatar": avatar})


@pytest.mark.parametrize(
    "card", [{"top": []}, {"other": {}}, {"data": {"x": float("nan")}}, {"data": {"d": {1: 2}}}]
)
def test_card_remainder_must_be_plain_json(card: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match="card"):
        Character.from_dict({"name": "a", "card": card})


def test_nulls_become_empty() -> None:
    c = Character.from_dict({"name": "a", "greeting": None, "tags": None, "sampling": None, "card": None})
    assert (c.greeting, c.tags, c.sampling, c.card) == ("", [], {}, {})


def test_display_name() -> None:
    assert Character(name="a").display_name == "a"
    assert Character(name="a", title="ツンデレちゃん").display_name == "ツンデレちゃん"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Chiharu Yamada", "Chiharu_Yamada"),
        ("Séraphine", "Seraphine"),
        ("ツンデレ", "character"),
        ("../../x", "x"),
    ],
)
def test_safe_name(text: str, expected: str) -> None:
    assert safe_name(text) == expected


# --- YAML ---------------------------------------------------------------------------------------------


def test_yaml_is_readable() -> None:
    c = Character(
        name="a", title="ツンデレちゃん", description="line one\nline two", sampling={"temperature": 0.3}
    )
    text = character_to_yaml(c).decode("utf-8")
    assert "title: ツンデレちゃん" in text  # allow_unicode: no \u escapes
    assert "description: |-\n  line one\n  line two" in text  # block style
    assert text.startswith("name: a\n")
    assert "avatar" not in text and "card" not in text  # defaults left out


yaml_text = st.text(st.characters(codec="utf-8"), max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    title=yaml_text,
    description=yaml_text,
    greeting=yaml_text,
    alternates=st.lists(yaml_text, max_size=3),
    tags=st.lists(yaml_text, max_size=3),
)
def test_yaml_round_trip(
    title: str, description: str, greeting: str, alternates: list[str], tags: list[str]
) -> None:
    c = Character(
        name="n",
        title=title,
        description=description,
        greeting=greeting,
        alternate_greetings=alternates,
        tags=tags,
    )
    assert character_from_yaml(character_to_yaml(c), "n") == c


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500))
def test_fuzz_preset_yaml(data: bytes) -> None:
    try:
        character_from_yaml(data, "n")
    except InvalidInput as exc:
        assert exc.message


def test_file_stem_wins_over_the_name_inside() -> None:
    assert character_from_yaml(b"name: other\ntitle: T\n", "stem").name == "stem"


def test_yaml_dates_stay_text() -> None:
    assert character_from_yaml(b"title: 2024-01-02\n", "n").title == "2024-01-02"


# --- PresetStore: seeding ------------------------------------------------------------------------------


def test_seeding_copies_shipped_presets_once(tmp_path: Path, shipped: Path, store: PresetStore) -> None:
    user = tmp_path / "user"
    assert [c.name for c in store.list()] == ["alpha", "beta"]
    assert json.loads((user / ".seeded.json").read_text()) == ["alpha", "beta"]
    store.delete("alpha")
    again = PresetStore(shipped, user, tmp_path / "trash")
    assert [c.name for c in again.list()] == ["beta"]  # a deleted preset does not come back


def test_seeding_never_overwrites_the_users_file(tmp_path: Path, shipped: Path) -> None:
    user = tmp_path / "user"
    write_preset(user, "alpha", title="Mine")
    store = PresetStore(shipped, user, tmp_path / "trash")
    assert store.get("alpha").title == "Mine"
    store.save(store.get("beta").model_copy(update={"title": "Edited"}))
    write_preset(shipped, "beta", title="Shipped v2")
    assert PresetStore(shipped, user, tmp_path / "trash").get("beta").title == "Edited"


def test_new_shipped_presets_are_seeded_later(tmp_path: Path, shipped: Path, store: PresetStore) -> None:
    write_preset(shipped, "gamma", title="Gamma")
    again = PresetStore(shipped, tmp_path / "user", tmp_path / "trash")
    assert again.get("gamma").title == "Gamma"
    assert again.is_shipped("gamma") and not again.is_shipped("nope") and not again.is_shipped("../gamma")


def test_missing_shipped_folder_is_fine(tmp_path: Path) -> None:
    store = PresetStore(tmp_path / "none", tmp_path / "user", tmp_path / "trash")
    assert store.list() == [] and store.problems == []


# --- PresetStore: reads and writes ----------------------------------------------------------------------


def test_save_get_round_trip(store: PresetStore) -> None:
    c = Character(name="new", title="新しい", greeting="line\nline", tags=["x"], sampling={"top_p": 0.5})
    store.save(c)
    assert store.get("new") == c
    store.save(c.model_copy(update={"title": "v2"}))
    assert store.get("new").title == "v2"
    assert (store.user_dir / "new.yaml.bak").is_file()


def test_list_skips_broken_files_and_reports_them(store: PresetStore) -> None:
    user = store.user_dir
    (user / "broken.yaml").write_text("title: [unclosed\n", "utf-8")
    (user / "wrongtype.yaml").write_text("- a\n- b\n", "utf-8")
    (user / "badfield.yaml").write_text("title: x\nsampling:\n  temperature: 99\n", "utf-8")
    (user / "bad name.yaml").write_text("title: x\n", "utf-8")
    (user / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    names = [c.name for c in store.list()]
    assert names == ["alpha", "beta"]
    assert len(store.problems) == 5
    joined = "\n".join(store.problems)
    for fragment in (
        "broken.yaml",
        "not valid YAML",
        "wrongtype.yaml",
        "sampling.temperature",
        "bad name.yaml",
    ):
        assert fragment in joined


def test_get_missing_is_not_found(store: PresetStore) -> None:
    with pytest.raises(NotFound, match="no preset named 'ghost'"):
        store.get("ghost")
    with pytest.raises(NotFound):
        store.delete("ghost")


@pytest.mark.parametrize(
    "name", ["../shipped/alpha", "../../etc/passwd", "/etc/passwd", "a\0b", "..", "", "a/b"]
)
def test_path_traversal_names_are_refused(tmp_path: Path, store: PresetStore, name: str) -> None:
    before = {p for p in tmp_path.rglob("*")}
    for call in (store.get, store.delete, store.export_card_json, store.export_card_png, store.avatar_path):
        with pytest.raises((InvalidInput, NotFound)):
            call(name)
    with pytest.raises(InvalidInput):
        store.save(Character.model_construct(name=name))
    assert {p for p in tmp_path.rglob("*")} == before
    assert not store.is_shipped(name)


def test_delete_moves_yaml_and_avatar_to_trash(tmp_path: Path, store: PresetStore) -> None:
    c = store.import_bytes("card.png", cards.card_png(Character(name="x", title="Pic")))
    assert c.avatar == "Pic.png" and store.avatar_path("Pic") == store.user_dir / "Pic.png"
    store.delete("Pic")
    assert {"Pic.yaml", "Pic.png"} <= files(tmp_path / "trash")
    assert not (store.user_dir / "Pic.png").exists()
    with pytest.raises(NotFound):
        store.get("Pic")


def test_delete_of_a_broken_preset_still_takes_its_files(tmp_path: Path, store: PresetStore) -> None:
    (store.user_dir / "junk.yaml").write_text("title: [oops\n", "utf-8")
    (store.user_dir / "junk.yaml.bak").write_text("title: ok\n", "utf-8")
    (store.user_dir / "junk.webp").write_bytes(b"RIFF")
    store.delete("junk")
    assert {"junk.yaml", "junk.yaml.bak", "junk.webp"} <= files(tmp_path / "trash")
    assert not any(p.stem.startswith("junk") for p in store.user_dir.iterdir())


def test_shared_avatar_stays_when_one_preset_is_deleted(store: PresetStore) -> None:
    (store.user_dir / "shared.png").write_bytes(cards.placeholder_png("S", (4, 4)))
    store.save(Character(name="one", avatar="shared.png"))
    store.save(Character(name="two", avatar="shared.png"))
    store.delete("one")
    assert store.avatar_path("two") == store.user_dir / "shared.png"


def test_avatar_path_none_without_avatar(store: PresetStore) -> None:
    assert store.avatar_path("alpha") is None
    store.save(Character(name="lost", avatar="lost.png"))
    assert store.avatar_path("lost") is None


# --- PresetStore: import and export ----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["default_Seraphina.png", "tgw_Example.yaml", "pygmalion_Example.json"])
def test_fixture_import_export_through_the_store(store: PresetStore, fixture: str) -> None:
    data = fixture_bytes(fixture)
    c = store.import_bytes(fixture, data)
    assert store.get(c.name) == c
    exported = json.loads(store.export_card_json(c.name))
    assert exported["spec"] == "chara_card_v2" and exported["data"]["name"] == c.title
    back = cards.parse_card(store.export_card_png(c.name)).character
    assert back.model_copy(update={"name": c.name, "avatar": c.avatar}) == c
    if fixture.endswith(".png"):
        original = json.loads(base64.b64decode(str(cards.card_texts(data)["chara"])))
        assert exported == original
        avatar = store.avatar_path(c.name)
        assert avatar is not None and cards.card_texts(avatar.read_bytes()) == {}
        with Image.open(io.BytesIO(store.export_card_png(c.name))) as img:
            assert img.size == (400, 600)


def test_import_never_overwrites(store: PresetStore) -> None:
    card = json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Alpha"}}).encode()
    store.save(Character(name="Dup", title="mine"))
    names = [store.import_bytes("a.json", card).name for _ in range(3)]
    assert names == ["Alpha-2", "Alpha-3", "Alpha-4"]  # "alpha" exists (case-insensitively)
    dup = json.dumps({"char_name": "Dup"}).encode()
    assert store.import_bytes("d.json", dup).name == "Dup-2"
    assert store.get("Dup").title == "mine"
    assert store.get("alpha").title == "Alpha"


def test_failed_import_writes_nothing(tmp_path: Path, store: PresetStore) -> None:
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for bad in (b"", b"{}", b"\x89PNG\r\n\x1a\nxx", b"name: x\nsampling: {temperature: 9}\n"):
        with pytest.raises(InvalidInput):
            store.import_bytes("bad.json", bad)
    with pytest.raises(TooLarge):
        store.import_bytes("big.json", b" " * (10 * 1024 * 1024 + 1))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_import_with_a_hostile_file_name_stays_in_the_folder(tmp_path: Path, store: PresetStore) -> None:
    c = store.import_bytes("../../../etc/passwd", b"name: ../../x\ngreeting: hi\n")
    assert c.name == "x" and (store.user_dir / "x.yaml").is_file()
    c = store.import_bytes("../../evil.yaml", "title: ツンデレ\n".encode())
    assert c.name == "evil" and c.title == "ツンデレ"
    assert {p.parent for p in tmp_path.rglob("*.yaml")} <= {store.user_dir, tmp_path / "shipped"}


def test_import_own_yaml_export(store: PresetStore) -> None:
    original = store.get("beta")
    c = store.import_bytes("beta.yaml", character_to_yaml(original))
    assert c.name == "Beta-2" and c.sampling == original.sampling


def test_export_preset_without_avatar_uses_a_placeholder(store: PresetStore) -> None:
    png = store.export_card_png("beta")
    assert set(cards.card_texts(png)) == {"chara", "ccv3"}
    back = cards.parse_card(png).character
    assert back.title == "Beta" and back.sampling == {"temperature": 0.1}


# --- shipped presets ----------------------------------------------------------------------------------


def test_shipped_presets_all_load(tmp_path: Path) -> None:
    store = PresetStore(SHIPPED, tmp_path / "user", tmp_path / "trash")
    presets = {c.name: c for c in store.list()}
    assert store.problems == []
    assert set(presets) >= EXPECTED_PRESETS and len(presets) >= 7
    for name, c in presets.items():
        raw = yaml.safe_load((SHIPPED / f"{name}.yaml").read_text("utf-8"))
        assert raw["name"] == name, "file stem = name"
        assert c.title and c.greeting and c.system_prompt and c.sampling, name
        assert store.is_shipped(name)
    assert sum(1 for c in presets.values() if c.alternate_greetings) >= 2


def test_tsundere_preset() -> None:
    c = character_from_yaml((SHIPPED / "tsundere.yaml").read_bytes(), "tsundere")
    assert c.title == "ツンデレちゃん"
    assert "べ、別に" in c.greeting and "んだからね！" in c.greeting
    assert all(any("\u3040" <= ch <= "\u30ff" for ch in g) for g in [c.greeting, *c.alternate_greetings])


def test_preset_sampling_fits_the_role() -> None:
    def temp(name: str) -> float:
        return float(
            character_from_yaml((SHIPPED / f"{name}.yaml").read_bytes(), name).sampling["temperature"]
        )

    assert temp("translator") < temp("friendly") < temp("storyteller")
    assert temp("translator") <= 0.3
