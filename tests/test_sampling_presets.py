"""Sampling presets store, param sources and session overrides."""

from __future__ import annotations

import json
from pathlib import Path

import llama_cpp
import pytest

from engine.errors import InvalidInput, NotFound
from engine.params import SamplingParams, parse_params
from engine.sampling_presets import (
    BUILTIN,
    FILE_NAME,
    GRAMMARS,
    SamplingPresetStore,
    check_preset_name,
    param_sources,
    session_overrides,
)


@pytest.fixture
def store(tmp_path: Path) -> SamplingPresetStore:
    return SamplingPresetStore(tmp_path)


def test_builtins_are_valid_and_listed_first(store: SamplingPresetStore) -> None:
    for values in BUILTIN.values():
        parse_params(values)
    assert store.names() == ["Precise", "Balanced", "Creative"]
    assert store.get("Creative")["temperature"] > store.get("Precise")["temperature"]


def test_save_get_delete_round_trip(store: SamplingPresetStore, tmp_path: Path) -> None:
    name = store.save("  My   cold ", {"temperature": 0.1, "stop": "###"})
    assert name == "My cold"
    assert store.get("My cold") == {"temperature": 0.1, "stop": ["###"]}  # normalised by SamplingParams
    assert store.names()[-1] == "My cold"
    on_disk = json.loads((tmp_path / FILE_NAME).read_text("utf-8"))
    assert on_disk == {"My cold": {"temperature": 0.1, "stop": ["###"]}}
    store.save("My cold", {"top_k": 5})  # replaces
    assert store.get("My cold") == {"top_k": 5}
    store.delete("My cold")
    with pytest.raises(NotFound):
        store.get("My cold")


def test_bad_values_and_names_are_refused(store: SamplingPresetStore) -> None:
    with pytest.raises(InvalidInput) as err:
        store.save("x", {"temperature": 9})
    assert err.value.field == "params.temperature"
    with pytest.raises(InvalidInput):
        store.save("y", {"temprature": 1})
    for bad in ("", "   ", "balanced", "a" * 65, "nul\x00here"):
        with pytest.raises(InvalidInput):
            check_preset_name(bad)
    with pytest.raises(InvalidInput):
        store.delete("Precise")
    with pytest.raises(NotFound):
        store.delete("nope")


def test_a_damaged_file_is_reported_not_fatal(store: SamplingPresetStore, tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{not json", "utf-8")
    assert store.names() == list(BUILTIN)
    assert store.pop_problems() and not store.problems
    (tmp_path / FILE_NAME).write_text(json.dumps({"ok": {"top_k": 3}, "bad": {"top_k": -5}}), "utf-8")
    assert store.names()[-1] == "ok" and "bad" not in store.names()
    assert any("bad" in p for p in store.pop_problems())
    store.save("new", {"seed": 1})  # rewrites the file without the bad entry; the old one is kept as .bak
    assert (tmp_path / (FILE_NAME + ".bak")).exists()


def test_param_sources_name_where_each_value_comes_from() -> None:
    config = SamplingParams.model_validate({"temperature": 0.6, "top_k": 30})  # as if set in the config file
    rows = {name: (value, source) for name, value, source in param_sources(
        config, {"top_p": 0.8, "min_p": 0.1}, {"top_p": 0.8, "min_p": 0.2, "max_tokens": 64}
    )}  # fmt: skip
    assert rows["temperature"] == (0.6, "config")
    assert rows["top_k"] == (30, "config")
    assert rows["typical_p"] == (1.0, "default")
    assert rows["top_p"] == (0.8, "character")  # the session only repeats the character's value
    assert rows["min_p"] == (0.2, "session")
    assert rows["max_tokens"] == (64, "session")
    assert list(rows) == list(SamplingParams.model_fields)


def test_session_overrides_reproduce_the_wanted_values() -> None:
    config = SamplingParams(temperature=0.7)
    character = {"top_p": 0.8}
    wanted = {**config.model_dump(), "top_p": 0.8, "temperature": 0.2, "stop": ["x"]}
    out = session_overrides(config, character, wanted)
    assert out == {"top_p": 0.8, "temperature": 0.2, "stop": ["x"]}
    assert (
        parse_params({**config.model_dump(), **character, **out}).model_dump()
        == parse_params(wanted).model_dump()
    )
    with pytest.raises(InvalidInput):
        session_overrides(config, character, {"top_k": -1})


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_example_grammars_compile(name: str) -> None:
    assert llama_cpp.LlamaGrammar.from_string(GRAMMARS[name], verbose=False) is not None
