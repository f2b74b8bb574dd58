"""GPU status through nvidia-ml-py (`pynvml`). No GPU, driver or library is a normal state, never an error.

`gpu_status()` is the full readout for /api/gpu and the GPU tab, `gpu_summary()` the short form for
/api/health, `GpuHistory` a small ring buffer of samples for a plot. Every function takes an optional
`nvml` module so tests can pass a fake one.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

_MIB = 1024 * 1024
_RETRY_S = 30.0  # a failed NVML start is retried after this long, not on every call

_lock = threading.Lock()
# id(module) -> (module, failure reason or None, monotonic time of the attempt); the module is kept
# so that its id cannot be reused by another object.
_init_cache: dict[int, tuple[Any, str | None, float]] = {}


def gpu_status(nvml: Any = None) -> dict[str, Any]:
    """{"available", "devices": [...], "reason"? (only when unavailable), "cuda_build"}. Never raises."""
    devices, reason = _read_devices(nvml)
    out: dict[str, Any] = {"available": bool(devices), "devices": devices}
    if reason:
        out["reason"] = reason
    out["cuda_build"] = cuda_build()
    return out


def gpu_summary(nvml: Any = None) -> dict[str, Any]:
    """Short form for /api/health: {"available", "name"?, "vram_used_mb"?, "vram_total_mb"?, "reason"?}.

    Several GPUs are summed. Unlike gpu_status() this never imports llama_cpp.
    """
    devices, reason = _read_devices(nvml)
    if not devices:
        return {"available": False, "reason": reason}
    names = [str(d["name"]) for d in devices]
    name = f"{len(names)} x {names[0]}" if len(names) > 1 and len(set(names)) == 1 else ", ".join(names)
    return {
        "available": True,
        "name": name,
        "vram_used_mb": _sum(d["vram_used_mb"] for d in devices),
        "vram_total_mb": _sum(d["vram_total_mb"] for d in devices),
    }


def _sum(values: Any) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _read_devices(nvml: Any) -> tuple[list[dict[str, Any]], str | None]:
    try:
        if nvml is None:
            nvml = _default_nvml()
            if nvml is None:
                return [], "nvidia-ml-py is not installed, so no GPU can be seen: running on CPU."
        reason = _ensure_init(nvml)
        if reason:
            return [], reason
        count = int(nvml.nvmlDeviceGetCount())
        if count <= 0:
            return [], "No NVIDIA GPU found: running on CPU."
        return [_read_device(nvml, i) for i in range(count)], None
    except Exception as exc:  # last line of defence: a status readout must never break a page
        return [], f"GPU status could not be read ({_describe(exc)}): running on CPU."


def _default_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def _ensure_init(nvml: Any) -> str | None:
    """Start NVML once per module; return a user-facing reason when it cannot start."""
    with _lock:
        cached = _init_cache.get(id(nvml))
        if cached and (cached[1] is None or time.monotonic() - cached[2] < _RETRY_S):
            return cached[1]
        reason: str | None = None
        try:
            nvml.nvmlInit()
        except Exception as exc:
            reason = _init_failure(nvml, exc)
        _init_cache[id(nvml)] = (nvml, reason, time.monotonic())
        return reason


def _init_failure(nvml: Any, exc: Exception) -> str:
    if _is(nvml, exc, "NVMLError_LibraryNotFound"):
        return "No NVIDIA driver found (NVML library not available): running on CPU."
    if _is(nvml, exc, "NVMLError_DriverNotLoaded"):
        return "The NVIDIA driver is installed but not loaded: running on CPU."
    if _is(nvml, exc, "NVMLError_NoPermission"):
        return "No permission to query the NVIDIA driver: running on CPU."
    return f"The NVIDIA driver did not answer ({_describe(exc)}): running on CPU."


def _is(nvml: Any, exc: Exception, class_name: str) -> bool:
    cls = getattr(nvml, class_name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


_DEVICE_KEYS = (
    "index",
    "name",
    "vram_used_mb",
    "vram_total_mb",
    "utilization_pct",
    "temperature_c",
    "power_w",
    "power_limit_w",
    "process_vram_mb",
)


def _read_device(nvml: Any, index: int) -> dict[str, Any]:
    def read(fn_name: str, *args: Any) -> Any:
        """One readout; any failure (NotSupported, NoPermission, a missing function) becomes None."""
        try:
            return getattr(nvml, fn_name)(*args)
        except Exception:
            return None

    out: dict[str, Any] = dict.fromkeys(_DEVICE_KEYS)
    out["index"] = index
    handle = read("nvmlDeviceGetHandleByIndex", index)
    if handle is None:
        return out
    name = read("nvmlDeviceGetName", handle)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    mem = read("nvmlDeviceGetMemoryInfo", handle)
    util = read("nvmlDeviceGetUtilizationRates", handle)
    out.update(
        name=str(name) if name is not None else f"GPU {index}",
        vram_used_mb=_mib(getattr(mem, "used", None)),
        vram_total_mb=_mib(getattr(mem, "total", None)),
        utilization_pct=_int(getattr(util, "gpu", None)),
        temperature_c=_int(
            read("nvmlDeviceGetTemperature", handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        ),
        power_w=_watts(read("nvmlDeviceGetPowerUsage", handle)),
        power_limit_w=_watts(read("nvmlDeviceGetEnforcedPowerLimit", handle)),
        process_vram_mb=_process_vram_mb(read("nvmlDeviceGetComputeRunningProcesses", handle)),
    )
    return out


def _mib(n: Any) -> int | None:
    return None if n is None else int(n) // _MIB


def _int(n: Any) -> int | None:
    return None if n is None else int(n)


def _watts(milliwatts: Any) -> float | None:
    return None if milliwatts is None else round(int(milliwatts) / 1000, 1)


def _process_vram_mb(processes: Any) -> int | None:
    """This process's VRAM on one device. None when unknown."""
    if processes is None:
        return None
    pid = os.getpid()
    for proc in processes:
        if getattr(proc, "pid", None) == pid:
            return _mib(getattr(proc, "usedGpuMemory", None))
    # Not listed: it uses no VRAM there, unless we are in a container, where NVML lists host PIDs.
    return None if _in_container() else 0


def _in_container() -> bool:
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


@functools.cache
def cuda_build() -> bool | None:
    """Whether the installed llama.cpp can offload to a GPU; None when llama_cpp is not installed.

    Read from the GPU backend libraries the build installed, without importing llama_cpp: the server
    process never loads libllama (the model runs in a worker process).
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    folders = [Path(p) / "lib" for p in spec.submodule_search_locations]
    gpu_libs = ("ggml-cuda", "ggml-hip", "ggml-vulkan", "ggml-metal", "ggml-sycl")
    return any(
        lib in f.name for folder in folders if folder.is_dir() for f in folder.iterdir() for lib in gpu_libs
    )


class GpuHistory:
    """The last `maxlen` samples of VRAM use and utilisation per device. Thread-safe."""

    def __init__(self, maxlen: int = 120, source: Callable[[], dict[str, Any]] = gpu_status) -> None:
        self._samples: deque[tuple[float, list[dict[str, Any]]]] = deque(maxlen=maxlen)
        self._source = source
        self._lock = threading.Lock()

    def sample(self, status: dict[str, Any] | None = None, now: float | None = None) -> None:
        """Append one sample from `status` (default: a fresh reading). No GPU appends nothing."""
        status = self._source() if status is None else status
        devices = [
            {k: d.get(k) for k in ("index", "vram_used_mb", "utilization_pct")}
            for d in status.get("devices", [])
        ]
        if devices:
            with self._lock:
                self._samples.append((time.time() if now is None else now, devices))

    def rows(self, metric: str | None = None) -> list[dict[str, Any]]:
        """Long-format rows {"time": datetime, "series": "GPU 0 VRAM MB", "value": float} for a line plot.

        `metric` ("vram_used_mb" or "utilization_pct") keeps one metric; None keeps both.
        """
        with self._lock:
            samples = list(self._samples)
        labels = {"vram_used_mb": "VRAM MB", "utilization_pct": "util %"}
        out: list[dict[str, Any]] = []
        for ts, devices in samples:
            when = datetime.fromtimestamp(ts)
            for d in devices:
                for key, label in labels.items():
                    if (metric is None or metric == key) and d.get(key) is not None:
                        out.append(
                            {"time": when, "series": f"GPU {d['index']} {label}", "value": float(d[key])}
                        )
        return out

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)
