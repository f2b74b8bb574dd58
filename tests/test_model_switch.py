"""Switching between two GGUF files in one process: the new model answers, and a failed load keeps it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import load_settings
from engine.errors import EngineError
from engine.params import SamplingParams
from engine.runtime import Runtime


@pytest.fixture
def runtime(model_path: Path, tmp_path: Path) -> Iterator[Runtime]:
    models = tmp_path / "models"
    models.mkdir()
    first, second = models / "first.gguf", models / "second.gguf"
    try:
        os.link(model_path, first)
    except OSError:  # another file system
        first.symlink_to(model_path.resolve())
    second.write_bytes(model_path.read_bytes())  # a separate file, as a user's second model would be
    (models / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    settings, _ = load_settings(
        overrides={
            "model": {"path": str(first), "n_ctx": 1024, "n_threads": 1},
            "models_dir": str(models),
            "data_dir": str(tmp_path / "data"),
        }
    )
    rt = Runtime(settings)
    yield rt
    rt.close()


def reply(rt: Runtime) -> str:
    text, done = rt.engine.complete(
        [{"role": "user", "content": "Say hi."}], SamplingParams(temperature=0, seed=1, max_tokens=8)
    )
    assert done.finish_reason in ("stop", "length")
    return text


def test_switch_between_two_files_then_a_failed_load_keeps_the_second(runtime: Runtime) -> None:
    assert runtime.model_info()["name"] == "first.gguf"
    first_reply = reply(runtime)
    info = runtime.switch_model("second.gguf", n_ctx=512)
    assert info["name"] == "second.gguf" and info["n_ctx"] == 512
    assert runtime.model_info()["name"] == "second.gguf"
    assert reply(runtime) == first_reply  # same weights, greedy: same words from the other file
    with pytest.raises(EngineError) as err:
        runtime.switch_model("broken.gguf")
    assert "broken.gguf" in err.value.message
    assert runtime.model_info()["name"] == "second.gguf"
    assert reply(runtime)


def test_a_load_that_cannot_fit_is_refused_before_it_starts(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An n_ctx up to 1,048,576 is accepted by the config, but the memory estimate refuses a load that
    needs more than is free, naming what it needs; the loaded model stays. The machine reports 4 GiB free:
    this one has 24 GiB, about what a 1,048,576-cell cache of this model takes, so its own figure decided
    the outcome (the load went ahead, for a minute, whenever the machine was idle enough)."""
    monkeypatch.setattr("engine.sysinfo.available_memory", lambda *args, **kwargs: 4 * 2**30)
    manager = runtime.models
    with pytest.raises(EngineError) as err:
        manager.load("second.gguf", n_ctx=1_048_576, n_gpu_layers=0)
    assert "Not loaded" in err.value.message and "GB" in err.value.message and "force" in err.value.message
    assert err.value.field == "n_ctx"
    assert runtime.model_info()["name"] == "first.gguf"
    assert reply(runtime)
