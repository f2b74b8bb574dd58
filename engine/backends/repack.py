"""Whether llama.cpp may repack weights for the CPU (its "extra buffer types").

On Intel Xeons with AMX, llama.cpp's AMX repacking segfaults on the first decode (ggml-org/llama.cpp#20824),
in llama-cpp-python and llama-server alike. `model.repack: auto` turns it off on such CPUs; true and false
force it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

AMX_FLAGS = frozenset({"amx_int8", "amx_tile", "amx_bf16", "amx_fp16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`, ARM `Features`); empty where the system does not say."""
    try:
        for line in cpuinfo.read_text("ascii", "replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def repack_allowed(setting: bool | Literal["auto"], flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """(repacking on?, why) for the config value `setting`."""
    if setting is not True and setting is not False:
        amx = sorted(AMX_FLAGS & (cpu_flags() if flags is None else flags))
        if amx:
            return (
                False,
                f"this CPU has Intel AMX ({', '.join(amx)}), whose weight repacking crashes llama.cpp",
            )
        return True, "auto"
    return setting, "model.repack is " + str(setting).lower()


@contextlib.contextmanager
def default_params_patch(llama_cpp: Any, function: str, **fields: Any) -> Iterator[None]:
    """Set fields of llama.cpp's default model or context params that `Llama()` has no argument for
    (use_extra_bufts, n_seq_max, kv_unified), for the duration of a load.

    `Llama.__init__` starts from `llama_model_default_params()` and `llama_context_default_params()`; this
    wraps one of them. Loads happen on one thread, so the swap is not visible to anyone else.
    """
    module = llama_cpp.llama_cpp
    original = getattr(module, function)

    def defaults() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    setattr(module, function, defaults)
    try:
        yield
    finally:
        setattr(module, function, original)
