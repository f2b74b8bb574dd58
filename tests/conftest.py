"""Shared fixtures. Real parts (the default model) are skipped when missing, except in CI (CI=true), where
a missing model fails the run instead of passing it silently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_MODEL


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: a real part that is missing must never turn a CI run green."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{why} (CI=true: a missing part fails the run; `make setup` installs it)", pytrace=False)
    pytest.skip(why)


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
