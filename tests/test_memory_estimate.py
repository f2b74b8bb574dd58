"""The memory estimate: against llama.cpp's own allocation on the default model (the buffer sizes it logs),
and the verdicts and the auto layer count against given free memory."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.memory_estimate import FreeMemory, cache_bytes, estimate, model_shape
from engine.models import GgufError
from engine.sysinfo import available_memory
from tests.helpers import ROOT

GIB = 2**30
MIB = 2**20

# llama.cpp's log lines: "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB" and the like
_BUFFER = re.compile(r"(model|KV|compute|output) buffer size = +([0-9.]+) MiB")


def llama_cpp_buffers(model: Path, n_ctx: int, flash_attn: bool, cache: str) -> dict[str, float]:
    """Load the model on the CPU as engine/backends/llama_cpp.py does, in a child; the MiB it logs."""
    # with the engine's weight repacking (auto: off on Intel AMX, whose repacked copy of the weights
    # is a second model buffer)
    code = f"""
        import llama_cpp
        from engine.backends.repack import default_params_patch, repack_allowed
        types = {{"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}}
        repack = repack_allowed("auto")[0]
        with default_params_patch(llama_cpp, "llama_model_default_params", use_extra_bufts=repack):
            llama_cpp.Llama(
                {str(model)!r}, n_ctx={n_ctx}, n_batch=512, n_ubatch=512, n_gpu_layers=0, n_threads=1,
                flash_attn={flash_attn}, type_k=types[{cache!r}], type_v=types[{cache!r}], verbose=True,
            )
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sizes: dict[str, float] = {}
    for kind, mib in _BUFFER.findall(out.stderr):
        sizes[kind] = sizes.get(kind, 0.0) + float(mib)
    assert {"model", "KV", "compute"} <= set(sizes), out.stderr[-3000:]
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n_ctx", "flash_attn", "cache"),
    [(512, False, "f16"), (4096, False, "f16"), (8192, False, "f16"), (4096, True, "q8_0")],
)
def test_estimate_matches_llama_cpps_allocation(
    model_path: Path, n_ctx: int, flash_attn: bool, cache: str
) -> None:
    real = llama_cpp_buffers(model_path, n_ctx, flash_attn, cache)
    est = estimate(
        model_path,
        n_ctx=n_ctx,
        n_gpu_layers=0,
        cache_type_k=cache,
        cache_type_v=cache,
        flash_attn=flash_attn,
        n_batch=512,
        free=FreeMemory(ram=64 * GIB),
    )
    ours = {"model": est.weights / MIB, "KV": est.kv / MIB, "compute": est.compute / MIB}
    print(f"n_ctx={n_ctx} fa={flash_attn} {cache}: llama.cpp {real} ours {ours}")
    assert ours["model"] == pytest.approx(real["model"], rel=0.02)
    assert ours["KV"] == pytest.approx(real["KV"], rel=0.01)
    assert ours["compute"] == pytest.approx(real["compute"], rel=0.10)
    total = sum(real.values())
    assert est.ram_needed / MIB == pytest.approx(total, rel=0.10)  # the target: within 10%


def test_tensor_sizes_agree_with_gguf_py(model_path: Path) -> None:
    from gguf import GGUFReader

    shape = model_shape(model_path)
    theirs = {t.name: int(t.n_bytes) for t in GGUFReader(model_path).tensors}
    assert shape.tensors == theirs
    assert shape.n_layers == shape.n_layer + 1
    assert shape.tied_output  # SmolLM2 reuses its embedding as the output projection


def test_verdicts_against_given_free_memory(model_path: Path) -> None:
    def est(ngl: int | str, ram: int | None, vram: int | None, n_ctx: int = 4096):  # type: ignore[no-untyped-def]
        return estimate(model_path, n_ctx=n_ctx, n_gpu_layers=ngl, free=FreeMemory(ram=ram, vram=vram))  # type: ignore[arg-type]

    cpu = est(-1, 8 * GIB, None)  # no GPU: every layer on the CPU, whatever n_gpu_layers says
    assert (cpu.verdict, cpu.gpu_layers, cpu.vram_needed) == ("fits_cpu", 0, 0)
    assert "Fits in RAM" in cpu.message
    short = est(-1, 100 * MIB, None)
    assert short.verdict == "short_ram" and short.short_by == short.ram_needed - 100 * MIB
    assert "more RAM than is free" in short.message
    gpu = est(-1, 8 * GIB, 8 * GIB)
    assert (gpu.verdict, gpu.gpu_layers) == ("fits_gpu", 31) and "Fits on the GPU" in gpu.message
    assert gpu.weights_gpu > 0 and gpu.kv_gpu == gpu.kv and gpu.compute_gpu > 0
    partial = est(10, 8 * GIB, 8 * GIB)
    assert (partial.verdict, partial.gpu_layers) == ("partial_gpu", 10)
    assert "10 of 31 layers on the GPU" in partial.message
    long = est(-1, 64 * GIB, 64 * GIB, n_ctx=65536)  # a long context: 1.4 GB of KV cache
    vram = long.vram_needed // 2 + 512 * MIB
    tight = est(-1, 64 * GIB, vram, n_ctx=65536)
    assert tight.verdict == "short_vram" and tight.layers_fit is not None and 0 < tight.layers_fit < 31
    assert f"{tight.layers_fit} of 31 layers fit" in tight.message
    assert tight.short_by == tight.vram_needed - vram
    auto = est("auto", 64 * GIB, vram, n_ctx=65536)
    assert auto.n_gpu_layers == tight.layers_fit and auto.verdict == "partial_gpu"
    assert auto.vram_needed <= vram - 512 * MIB  # within the margin
    one_more = est(auto.n_gpu_layers + 1, 64 * GIB, vram, n_ctx=65536)
    assert one_more.vram_needed > vram - 512 * MIB  # and the most layers that do
    assert est("auto", 8 * GIB, None).n_gpu_layers == 0
    assert est("auto", 8 * GIB, 64 * GIB).n_gpu_layers == 31


def test_more_context_and_bigger_cache_types_cost_more(model_path: Path) -> None:
    free = FreeMemory(ram=64 * GIB)
    kv = [estimate(model_path, n_ctx=n, n_gpu_layers=0, free=free).kv for n in (512, 1024, 4096)]
    assert kv[1] == 2 * kv[0] and kv[2] == 8 * kv[0]
    assert estimate(model_path, n_ctx=300, n_gpu_layers=0, free=free).kv == kv[0]  # padded to 256 cells
    q8 = estimate(
        model_path, n_ctx=4096, n_gpu_layers=0, cache_type_k="q8_0", cache_type_v="q8_0", free=free
    ).kv
    assert q8 == pytest.approx(kv[2] * 34 / 64)  # a q8_0 block: 32 values in 34 bytes
    assert cache_bytes("f32", 10) == 40


def test_available_memory_reads_meminfo_and_a_cgroup_limit(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 16000000 kB\nMemAvailable:    8000000 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert available_memory(meminfo, cgroup) == 8000000 * 1024
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("100\n")
    assert available_memory(meminfo, cgroup) == 8000000 * 1024
    (cgroup / "memory.max").write_text(str(2 * GIB))
    (cgroup / "memory.current").write_text(str(GIB))
    assert available_memory(meminfo, cgroup) == GIB  # the container's limit is tighter
    assert available_memory(tmp_path / "absent", tmp_path / "absent") is None
    real = available_memory()
    assert real is None or real > 0


def _odd_gguf(path: Path, values: dict[str, object], tensor: str) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in values.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_uint32(key, int(value))  # type: ignore[call-overload]
    w.add_tensor(tensor, np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


_VALUES = st.one_of(
    st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2, 512, 513]), st.text(max_size=8),
    st.lists(st.integers(0, 64), max_size=4),
)  # fmt: skip


@given(
    values=st.dictionaries(
        st.sampled_from(
            ["llama.block_count", "llama.embedding_length", "llama.attention.head_count",
             "llama.attention.head_count_kv", "llama.attention.key_length", "llama.feed_forward_length"]
        ),
        _VALUES,
    ),
    tensor=st.sampled_from(["blk.0.w", "blk.x.w", "blk.99.w", "token_embd.weight", "output.weight", "odd"]),
)  # fmt: skip
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_odd_headers_give_a_clear_error_or_an_estimate(tmp_path: Path, values: dict, tensor: str) -> None:
    path = _odd_gguf(tmp_path / f"odd-{abs(hash((str(values), tensor)))}.gguf", values, tensor)
    try:
        est = estimate(path, n_ctx=512, n_gpu_layers=-1, free=FreeMemory(ram=GIB, vram=GIB))
    except GgufError as exc:
        assert str(exc)
        return
    assert est.weights >= 0 and est.kv >= 0 and est.compute >= 0 and est.n_layers >= 2
