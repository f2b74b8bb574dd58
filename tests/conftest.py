"""Shared fixtures. Real parts (the default model) are skipped when missing, except in CI (CI=true), where
a missing model fails the run instead of passing it silently."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_MODEL, ROOT, require


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def repository_data_untouched() -> Iterator[None]:
    """No test writes a file into the repository's data/, where a user's chats and caches live (a stale
    prompt cache there also makes a "cold" prompt warm in the next run). Logs are left out: a server the
    user runs beside the tests appends to them."""
    data = ROOT / "data"
    before = _files(data)
    yield
    new = sorted(str(p.relative_to(data)) for p in _files(data) - before if p.parent.name != "logs")
    assert not new, f"tests wrote into the repository's data/ (give them a data dir of their own): {new[:5]}"


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
