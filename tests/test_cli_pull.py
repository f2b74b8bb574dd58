"""python -m cli --pull against the local test Hub: the file lands in models/, errors exit 2 with one line,
and Ctrl+C cancels and keeps nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.downloads import PARTS_DIR
from tests.helpers import ROOT
from tests.hubserver import LocalHub, standard_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with standard_hub(tmp_path_factory.mktemp("hub")) as h:
        yield h


def cli(hub: LocalHub, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "LLM_MODELS_DIR": str(tmp_path / "models"),
        "LLM_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("HF_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_pull_a_quant_with_its_projector(hub: LocalHub, tmp_path: Path) -> None:
    hub.rate = None
    proc = cli(hub, tmp_path, "--pull", "me/Tiny-GGUF:Q8_0", "--mmproj")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Saved tiny-Q8_0.gguf" in err and "--model tiny-Q8_0.gguf" in err
    assert (tmp_path / "models" / "tiny-Q8_0.gguf").is_file()
    assert (tmp_path / "models" / "mmproj-tiny-F16.gguf").is_file()
    assert out == ""  # nothing on stdout: it was not asked for a reply


def test_pull_errors_are_one_line_and_exit_2(hub: LocalHub, tmp_path: Path) -> None:
    for ref, words in (("me/Nothing", "No model repo"), ("me/Gated-GGUF", "gated"), ("nonsense", "repo id")):
        proc = cli(hub, tmp_path, "--pull", ref)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (ref, err)
        assert words in err and "Traceback" not in err, err


def test_ctrl_c_cancels_and_keeps_nothing(hub: LocalHub, tmp_path: Path) -> None:
    hub.rate = 300_000
    try:
        proc = cli(hub, tmp_path, "--pull", "me/Tiny-GGUF:Q4_K_M")
        parts = tmp_path / "models" / PARTS_DIR
        deadline = time.monotonic() + 60
        while not (parts.is_dir() and any(parts.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        hub.rate = None
    assert proc.returncode == 130, err
    assert "Cancelled" in err
    assert not list(parts.iterdir()) and not list((tmp_path / "models").glob("*.gguf"))
