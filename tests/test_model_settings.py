"""Per-model settings: the store (atomic, validated, damaged files survived), and a real runtime where a model
that is loaded again opens with the settings it last loaded with and its own sampling defaults."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import load_settings
from engine.errors import InvalidInput
from engine.model_manager import ModelManager
from engine.model_settings import FILE_NAME, ModelSettingsStore
from engine.runtime import Runtime


def test_store_round_trip_validation_and_backup(tmp_path: Path) -> None:
    store = ModelSettingsStore(tmp_path)
    assert store.get("a.gguf") == {"load": {}, "sampling": {}}
    store.remember("a.gguf", {"n_ctx": 2048, "n_gpu_layers": 0, "cache_type_k": "q8_0"})
    store.set_sampling("a.gguf", {"temperature": 0.3, "top_k": 20})
    assert store.get("a.gguf") == {
        "load": {"n_ctx": 2048, "n_gpu_layers": 0, "cache_type_k": "q8_0"},
        "sampling": {"temperature": 0.3, "top_k": 20},
    }
    assert (tmp_path / (FILE_NAME + ".bak")).is_file()  # the previous version is kept
    with pytest.raises(InvalidInput) as err:
        store.remember("a.gguf", {"n_ctx": 1})
    assert err.value.field == "n_ctx"
    with pytest.raises(InvalidInput):
        store.remember("a.gguf", {"path": "/etc/passwd"})
    with pytest.raises(InvalidInput):
        store.set_sampling("a.gguf", {"temperature": "hot"})
    with pytest.raises(InvalidInput):
        store.remember("../x.gguf", {"n_ctx": 2048})
    assert store.get("a.gguf")["load"]["n_ctx"] == 2048  # refused writes changed nothing


def test_a_damaged_file_is_reported_and_skipped(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text(
        json.dumps({"good.gguf": {"load": {"n_ctx": 1024}}, "bad.gguf": {"load": {"n_ctx": "lots"}}})
    )
    store = ModelSettingsStore(tmp_path)
    assert store.get("good.gguf")["load"] == {"n_ctx": 1024}
    assert store.get("bad.gguf")["load"] == {}
    assert any("bad.gguf" in p for p in store.problems)
    (tmp_path / FILE_NAME).write_text("{not json")
    assert store.get("good.gguf")["load"] == {}
    store.remember("good.gguf", {"n_ctx": 512})  # a save replaces it; the broken one stays as .bak
    assert (tmp_path / (FILE_NAME + ".bak")).read_text() == "{not json"


@pytest.fixture
def runtime(model_path: Path, tmp_path: Path) -> Iterator[Runtime]:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("first.gguf", "second.gguf"):
        try:
            os.link(model_path, models / name)
        except OSError:
            (models / name).symlink_to(model_path.resolve())
    (models / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    settings, _ = load_settings(
        overrides={
            "model": {"path": str(models / "first.gguf"), "n_ctx": 1024, "n_threads": 1, "n_gpu_layers": 0},
            "generation": {"temperature": 0.8},
            "models_dir": str(models),
            "data_dir": str(tmp_path / "data"),
        }
    )
    rt = Runtime(settings)
    yield rt
    rt.close()


def test_a_model_loaded_again_opens_with_its_last_settings(runtime: Runtime) -> None:
    manager = runtime.models
    assert runtime.models is manager
    assert manager.load("second.gguf", n_ctx=768)["n_ctx"] == 768
    assert manager.store.get("second.gguf")["load"]["n_ctx"] == 768
    assert manager.load("first.gguf")["n_ctx"] == 1024  # the config's value: nothing remembered yet
    assert manager.load("second.gguf")["n_ctx"] == 768  # restored
    assert runtime.model_info()["n_ctx"] == 768
    assert manager.settings_for("second.gguf", {"n_ctx": 2048})["n_ctx"] == 2048  # the caller wins


def test_a_failed_load_remembers_nothing(runtime: Runtime) -> None:
    manager = runtime.models
    with pytest.raises(InvalidInput):
        manager.load("broken.gguf", n_ctx=512)
    assert manager.store.get("broken.gguf") == {"load": {}, "sampling": {}}
    assert runtime.model_info()["name"] == "first.gguf"


def test_sampling_defaults_follow_the_model(runtime: Runtime) -> None:
    manager = runtime.models
    manager.store.set_sampling("second.gguf", {"temperature": 0.2})
    manager.load("second.gguf")
    assert runtime.params_for(None).temperature == 0.2
    manager.load("first.gguf")
    assert runtime.params_for(None).temperature == 0.8  # back to the config's


def test_auto_gpu_layers_and_the_catalog(runtime: Runtime) -> None:
    manager = ModelManager(runtime)
    info = manager.load("second.gguf", n_gpu_layers="auto")
    assert isinstance(info["n_gpu_layers"], int) and info["n_gpu_layers"] >= 0
    rows = {r["name"]: r for r in manager.catalog()}
    assert set(rows) == {"first.gguf", "second.gguf", "broken.gguf"}
    second = rows["second.gguf"]
    assert second["settings"]["load"]["n_gpu_layers"] == info["n_gpu_layers"]
    assert second["estimate"]["verdict"] in ("fits_cpu", "fits_gpu", "partial_gpu", "short_ram", "short_vram")
    assert second["estimate"]["n_ctx"] == 1024 and second["estimate"]["message"]
    broken = rows["broken.gguf"]
    assert broken["estimate"] is None and (broken["error"] or "no architecture" in broken["estimate_error"])
    with pytest.raises(InvalidInput):
        manager.estimate("nothing.gguf")
