"""gpu.required: true refuses to start without a usable GPU: `python -m webui` and `python -m cli` exit with
status 2 and one line on stderr saying what is missing and how to fix it. Real processes, real model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.config import Settings
from engine.gpu import gpu_summary
from engine.gpu_required import refusal
from tests.helpers import ROOT, TEST_ENV, free_port

NO_GPU = {
    "available": False,
    "reason": "No NVIDIA driver found (NVML library not available): running on CPU.",
}
A_GPU = {"available": True, "name": "Fake GPU", "vram_used_mb": 1, "vram_total_mb": 2}


def _config(tmp_path: Path, model: Path, n_gpu_layers: int = -1) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model:\n  path: {model}\n  n_gpu_layers: {n_gpu_layers}\ngpu:\n  required: true\n")
    return cfg


def _run(cmd: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **TEST_ENV}
    env.pop("LLM_GPU__REQUIRED", None)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, input=stdin)


def _the_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"want exactly one error line, got:\n{stderr[-3000:]}"
    line = lines[0]
    assert "gpu.required" in line and "Fix:" in line and "gpu.required: false" in line, line
    assert "Traceback" not in stderr, stderr[-3000:]
    return line


@pytest.mark.skipif(gpu_summary().get("available"), reason="this machine has a GPU")
def test_server_refuses_to_start_without_a_gpu(tmp_path: Path, model_path: Path) -> None:
    cfg = _config(tmp_path, model_path)
    cmd = [sys.executable, "-m", "webui", "--config", str(cfg), "--port", str(free_port())]
    proc = _run([*cmd, "--data-dir", str(tmp_path / "data")])
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    line = _the_line(proc.stderr)
    assert "no usable GPU" in line, line  # the driver is what is missing here
    assert "Serving the chat UI" not in proc.stdout, "it started serving"


def test_server_refuses_when_nothing_is_offloaded(tmp_path: Path, model_path: Path) -> None:
    """n_gpu_layers 0 keeps every layer on the CPU, GPU or not: refused on any machine."""
    cfg = _config(tmp_path, model_path, n_gpu_layers=0)
    cmd = [sys.executable, "-m", "webui", "--config", str(cfg), "--port", str(free_port())]
    proc = _run([*cmd, "--data-dir", str(tmp_path / "data")])
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    line = _the_line(proc.stderr)
    assert "n_gpu_layers is 0" in line, line


def test_terminal_direct_mode_refuses_too(tmp_path: Path, model_path: Path) -> None:
    cfg = _config(tmp_path, model_path, n_gpu_layers=0)
    cmd = [sys.executable, "-m", "cli", "--config", str(cfg), "--data-dir", str(tmp_path / "data")]
    proc = _run(cmd, stdin="Hello\n")
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "n_gpu_layers is 0" in proc.stderr and "Fix:" in proc.stderr, proc.stderr[-3000:]
    assert not proc.stdout.strip(), "it answered on the CPU"


# --- the line itself, for each missing part -------------------------------------------------------------


def _rt(required: bool = True, *, load_error: str | None = None, info: dict[str, Any] | None = None) -> Any:
    settings = Settings.model_validate({"gpu": {"required": required}})
    info = info if info is not None else {"loaded": True, "gpu_offload": True}
    return SimpleNamespace(
        settings=settings, engine=SimpleNamespace(load_error=load_error), model_info=lambda: info
    )


def test_not_required_or_remote_never_refuses() -> None:
    assert refusal(_rt(False, load_error="x"), NO_GPU) is None
    rt = _rt(load_error="x")
    rt.settings.backend.kind = "openai"
    assert refusal(rt, NO_GPU) is None


def test_a_gpu_with_the_model_offloaded_is_fine() -> None:
    assert refusal(_rt(), A_GPU) is None


def test_each_missing_part_is_named() -> None:
    line = refusal(_rt(), NO_GPU)
    assert line and "no usable GPU (No NVIDIA driver found" in line and "running on CPU" not in line
    cpu_build = (
        "gpu.required is true but this llama-cpp-python build has no GPU support, so inference would "
        "run on the CPU. Install a CUDA build of llama-cpp-python or set gpu.required: false."
    )
    line = refusal(_rt(load_error=cpu_build, info={"loaded": False}), A_GPU)
    assert line and "the model did not load (this llama-cpp-python build has no GPU support" in line
    assert line.count("gpu.required is true") == 1 and "\n" not in line
    line = refusal(_rt(info={"loaded": True, "gpu_offload": False}), A_GPU)
    assert line and "no CUDA support" in line
    rt = _rt(load_error="gpu.required is true but model.n_gpu_layers is 0, so it would run on the CPU.")
    rt.settings.model.n_gpu_layers = 0
    line = refusal(rt, A_GPU)
    assert line and line.count("n_gpu_layers is 0") == 1 and "did not load" not in line, line
