"""Shared fixtures. Real parts (the default model) are skipped when missing, except in CI (CI=true), where
a missing model fails the run instead of passing it silently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_MODEL, require


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test starts from the documented defaults: no LLM_* setting from the shell that runs the tests
    (LLM_TEST_* choose test inputs and stay), and a data dir of its own, never the repository's data/."""
    for name in list(os.environ):
        if name.startswith("LLM_") and not name.startswith("LLM_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The GGUF model the real-model tests use: LLM_TEST_MODEL, or the default SmolLM2 file."""
    path = Path(os.environ.get("LLM_TEST_MODEL") or DEFAULT_MODEL)
    require(path.is_file(), f"model file not found: {path}")
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        require(False, f"llama-cpp-python is not importable: {exc}")
    return path
