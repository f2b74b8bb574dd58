"""Load one thing in a fresh process and print JSON: load time and RSS, free of the bench's own memory.

python -m bench.probe raw|ours|gradio MODEL THREADS N_CTX
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .machine import proc_status_mb, self_peak_rss_mb
from .servers import FLASH_ATTN, REPACK


def rss() -> float:
    return proc_status_mb(os.getpid(), "VmRSS") or 0.0


def raw_llama(model: str, threads: int, n_ctx: int, **kw: Any) -> Any:
    """The baseline: llama-cpp-python's Llama with the same settings as our backend."""
    import llama_cpp

    from engine.backends.repack import default_params_patch

    # Llama() has no argument for weight repacking; its default params get the bench's setting
    with default_params_patch(llama_cpp, "llama_model_default_params", use_extra_bufts=REPACK):
        return llama_cpp.Llama(
            model_path=model,
            n_ctx=n_ctx,
            n_batch=512,
            n_ubatch=512,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=-1,
            flash_attn=FLASH_ATTN,
            verbose=False,
            **kw,
        )


def our_backend(model: str, threads: int, n_ctx: int) -> Any:
    from engine import load_settings
    from engine.backends.llama_cpp import LlamaCppBackend

    settings, _ = load_settings(overrides={"model": {"path": model, "n_threads": threads, "n_ctx": n_ctx}})
    cache = Path(tempfile.mkdtemp(prefix="bench-slot-cache-"))  # the server's default: a prompt cache on disk
    return LlamaCppBackend(settings.model, Path(model), cache_dir=cache)


def our_worker(model: str, threads: int, n_ctx: int) -> Any:
    """Our backend in a supervised worker process, as the server runs it."""
    from engine import load_settings
    from engine.backends.worker_client import WorkerBackend

    settings, _ = load_settings(overrides={"model": {"path": model, "n_threads": threads, "n_ctx": n_ctx}})
    data = Path(tempfile.mkdtemp(prefix="bench-worker-data-"))  # its prompt cache and safe-mode memory
    return WorkerBackend(settings.model, Path(model), data_dir=data)


def main(argv: list[str]) -> int:
    what, model, threads, n_ctx = argv[0], argv[1], int(argv[2]), int(argv[3])
    base = rss()
    out: dict[str, Any] = {"what": what, "python_rss_mb": base}
    if what == "gradio":
        started = time.perf_counter()
        import webui.app  # noqa: F401  (gradio, fastapi and the engine, as the server imports them)

        out["import_s"] = round(time.perf_counter() - started, 3)
        out["rss_mb"] = rss()
    else:
        import llama_cpp  # noqa: F401

        out["import_rss_mb"] = rss()
        started = time.perf_counter()
        obj = raw_llama(model, threads, n_ctx) if what == "raw" else our_backend(model, threads, n_ctx)
        out["load_s"] = round(time.perf_counter() - started, 3)
        out["rss_mb"] = rss()
        del obj
    out["peak_rss_mb"] = self_peak_rss_mb()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
