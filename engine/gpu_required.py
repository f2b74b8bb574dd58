"""`gpu.required: true`: why this process must not start, in one line, or None when the GPU is usable.

The server and the terminal call it once the runtime is built, and exit with status 2 on a line.
It reads what the runtime already knows (the load error, the model's offload flag) and the NVML summary;
it never imports llama_cpp.
"""

from __future__ import annotations

from typing import Any

from .gpu import gpu_summary

FIX = (
    "Fix: install the NVIDIA driver and a CUDA build of llama-cpp-python "
    "(make clean-venv && make run CUDA=1, with nvcc on the PATH), keep model.n_gpu_layers at -1, "
    "or set gpu.required: false (LLM_GPU__REQUIRED=false) to allow the CPU."
)


def refusal(rt: Any, summary: dict[str, Any] | None = None) -> str | None:
    """One line saying what is missing (driver, CUDA build, offload) and how to fix it; None when the
    model runs on a GPU, gpu.required is false, or the backend is a remote server (its GPU is its own)."""
    settings = rt.settings
    if not settings.gpu.required or settings.backend.kind != "llama_cpp":
        return None
    summary = gpu_summary() if summary is None else summary
    missing: list[str] = []
    if not summary.get("available"):
        reason = str(summary.get("reason") or "No NVIDIA GPU found.")
        missing.append("no usable GPU (" + reason.removesuffix(": running on CPU.").rstrip(".") + ")")
    if settings.model.n_gpu_layers == 0:
        missing.append("nothing is offloaded (model.n_gpu_layers is 0)")
    load_error = rt.engine.load_error
    info = rt.model_info()
    if load_error and "n_gpu_layers is 0" not in _clause(load_error):
        missing.append("the model did not load (" + _clause(load_error) + ")")
    elif not load_error and info.get("loaded") and not info.get("gpu_offload") and not missing:
        missing.append("the model is not offloaded (this llama-cpp-python build has no CUDA support)")
    if not missing:
        return None
    return "gpu.required is true, but " + "; and ".join(missing) + ". " + FIX


def _clause(text: str) -> str:
    """A message's first sentence as a clause inside one line (its own advice is in FIX)."""
    text = " ".join(text.split()).removeprefix("gpu.required is true but ")
    return text.split(". ")[0].rstrip(".")
