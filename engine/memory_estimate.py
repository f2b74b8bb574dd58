"""Before loading: what a GGUF model will take in RAM and VRAM, and whether that fits in what is free.

Read from the header alone (tensor shapes and types, the attention shape), following how llama.cpp places
a model:
- the input embedding stays on the CPU. `n_gpu_layers` counts the output layer first, then the repeating
  blocks from the last one down: llama.cpp's "offloaded N/M layers", where M is the blocks plus one;
- a block's KV cache lives where the block does: `n_ctx` rounded up to 256 cells, times the K and V widths
  (head size times KV heads), in the cache types;
- the compute buffer holds a batch's largest intermediate results (see `_compute_bytes`). It goes on the
  GPU when any layer does, with a small one on the CPU.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .errors import InvalidInput
from .models import GgufError, read_gguf_header

MIB = 1024 * 1024
CTX_PAD = 256  # llama.cpp pads n_ctx to this many cells
MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS
F32 = 4
Verdict = Literal["fits_gpu", "partial_gpu", "fits_cpu", "short_ram", "short_vram"]


@dataclass
class ModelShape:
    """What the header says about a model's size, per layer."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: list[int]  # per layer (0 for a layer without attention)
    head_k: int
    head_v: int
    n_vocab: int
    n_ff: int
    layer_bytes: list[int]  # weights of each block
    input_bytes: int  # token embedding (always on the CPU)
    output_bytes: int  # output norm and projection
    tied_output: bool  # no output.weight: the embedding doubles as the projection
    other_bytes: int = 0
    tensors: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def weights(self) -> int:
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes + self.other_bytes

    @property
    def n_layers(self) -> int:
        """Offloadable layers, as llama.cpp counts them: the blocks and the output layer."""
        return self.n_layer + 1


class FreeMemory(BaseModel):
    ram: int | None  # bytes free for a new allocation
    vram: int | None = None  # bytes free on the GPUs together; None: no GPU llama.cpp can use
    devices: int = 0


class Estimate(BaseModel):
    """The numbers for one load, and a verdict. Bytes throughout."""

    n_ctx: int
    n_gpu_layers: int  # as llama.cpp gets it (auto resolved)
    n_layers: int  # offloadable: blocks + output
    gpu_layers: int  # layers that will run on the GPU
    weights: int
    weights_gpu: int
    kv: int
    kv_gpu: int
    compute: int
    compute_gpu: int
    ram_needed: int
    vram_needed: int
    ram_free: int | None
    vram_free: int | None
    verdict: Verdict
    short_by: int = 0  # bytes more than is free (short_ram / short_vram)
    layers_fit: int | None = None  # with short_vram: how many layers would fit
    message: str = ""


def cache_bytes(type_name: str, elements: int) -> int:
    """Bytes of `elements` values in a KV cache type (f16, q8_0, ...)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType[type_name.upper()]
    except KeyError:
        raise InvalidInput(f"Unknown cache type {type_name!r}.", field="cache_type_k") from None
    block, size = GGML_QUANT_SIZES[qtype]
    return math.ceil(elements / block) * size


def model_shape(path: Path) -> ModelShape:
    """The model's shape from its header. Raises GgufError / OSError. Cached by file identity."""
    st = Path(path).stat()
    return _shape_cached(str(path), st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=32)
def _shape_cached(path: str, mtime_ns: int, size: int, inode: int) -> ModelShape:
    header = read_gguf_header(Path(path), tensors=True)
    try:
        return _shape(header, size)
    except GgufError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError) as exc:
        why = type(exc).__name__
        raise GgufError(f"The GGUF header has values no model could load with ({why}).") from None


def _shape(header: Any, size: int) -> ModelShape:
    meta = header.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise GgufError("The GGUF header names no architecture.")

    def key(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    n_layer = int(key("block_count", 0))
    n_embd = int(key("embedding_length", 0))
    if not 0 < n_layer <= MAX_LAYERS or n_embd <= 0:
        raise GgufError("The GGUF header has no usable block count or embedding length.")
    n_head = _first(key("attention.head_count", 0))
    kv = key("attention.head_count_kv", n_head)
    n_head_kv = [int(x) for x in kv] if isinstance(kv, list) else [int(kv)] * n_layer
    n_head_kv = (n_head_kv + [n_head_kv[-1] if n_head_kv else 0] * n_layer)[:n_layer]
    head_k = int(key("attention.key_length", 0) or (n_embd // n_head if n_head else 0))
    head_v = int(key("attention.value_length", 0) or head_k)
    sizes = _tensor_bytes(header.tensors, size)
    layers = [0] * n_layer
    inputs = outputs = other = 0
    for name, nbytes in sizes.items():
        if name.startswith("blk."):
            index = int(name.split(".")[1])
            if index < n_layer:
                layers[index] += nbytes
                continue
            other += nbytes  # e.g. next-token-prediction blocks past block_count
        elif name.startswith(("token_embd.", "token_types.", "position_embd.")):
            inputs += nbytes
        elif name.startswith(("output.", "output_norm.")):
            outputs += nbytes
        else:
            other += nbytes
    vocab = meta.get(f"{arch}.vocab_size") or _vocab_from_embedding(header.tensors) or 0
    return ModelShape(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_k=head_k,
        head_v=head_v,
        n_vocab=int(vocab),
        n_ff=_first(key("feed_forward_length", 0)),
        layer_bytes=layers,
        input_bytes=inputs,
        output_bytes=outputs,
        tied_output="output.weight" not in sizes,
        other_bytes=other,
        tensors=sizes,
    )


def _first(value: Any) -> int:
    if isinstance(value, list):
        return int(max(value)) if value else 0
    return int(value or 0)


def _vocab_from_embedding(tensors: list[Any]) -> int | None:
    for t in tensors:
        if t.name == "token_embd.weight" and len(t.shape) == 2:
            return int(t.shape[1])
    return None


def _tensor_bytes(tensors: list[Any], file_size: int) -> dict[str, int]:
    """Each tensor's size from its type and shape (gguf's block sizes); from the offsets when unknown."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    out: dict[str, int] = {}
    by_offset = sorted(tensors, key=lambda t: t.offset)
    next_offset = {
        t.name: (by_offset[i + 1].offset if i + 1 < len(by_offset) else None) for i, t in enumerate(by_offset)
    }
    for t in tensors:
        n = math.prod(t.shape)
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.ggml_type)]
            out[t.name] = n // block * size
        except (ValueError, KeyError):
            following = next_offset[t.name]
            out[t.name] = (following - t.offset) if following is not None else 0
    return out


def kv_bytes(shape: ModelShape, n_ctx: int, type_k: str, type_v: str, layers: range | None = None) -> int:
    cells = _padded(n_ctx)
    total = 0
    for il in layers if layers is not None else range(shape.n_layer):
        heads = shape.n_head_kv[il]
        if heads:
            total += cache_bytes(type_k, shape.head_k * heads * cells)
            total += cache_bytes(type_v, shape.head_v * heads * cells)
    return total


def _padded(n_ctx: int) -> int:
    return -(-n_ctx // CTX_PAD) * CTX_PAD


def _compute_bytes(shape: ModelShape, n_ctx: int, n_ubatch: int, flash_attn: bool) -> int:
    """The compute buffer llama.cpp reserves for a batch of `n_ubatch` tokens over the whole context.

    Its size is the graph's peak of live intermediate results: the batch's logits (n_vocab x n_ubatch,
    f32) with a few activations, or, without flash attention, the attention scores (n_ctx x n_ubatch x
    heads, f32) with two f16 masks. Fitted to llama.cpp's own log on SmolLM2 (see
    tests/test_memory_estimate.py), where it is within 1% for n_ctx 512 to 16384.
    """
    cells = _padded(n_ctx)
    act = shape.n_embd * n_ubatch * F32  # one activation row per token
    logits = shape.n_vocab * n_ubatch * F32 + 3 * act
    ffn = 3 * shape.n_ff * n_ubatch * F32 + 2 * act
    attn = 0 if flash_attn else cells * n_ubatch * (shape.n_head * F32 + 2 * 2) + 6 * act
    return max(logits, ffn, attn)


def estimate(
    path: Path,
    *,
    n_ctx: int,
    n_gpu_layers: int | Literal["auto"],
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    flash_attn: bool = False,
    n_batch: int = 512,
    free: FreeMemory | None = None,
) -> Estimate:
    """What loading `path` with these settings takes, against `free` (default: measured now)."""
    shape = model_shape(path)
    free = free if free is not None else free_memory()
    n_ubatch = min(n_batch, 512) if n_batch > 0 else 512
    if n_gpu_layers == "auto":
        n_gpu_layers = auto_gpu_layers(
            shape, free, n_ctx=n_ctx, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
            flash_attn=flash_attn, n_ubatch=n_ubatch,
        )  # fmt: skip
    gpu = _gpu_layers(shape, n_gpu_layers if free.vram is not None else 0)
    need = _needs(shape, gpu, n_ctx, cache_type_k, cache_type_v, flash_attn, n_ubatch)
    out = Estimate(
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        n_layers=shape.n_layers,
        gpu_layers=gpu,
        ram_free=free.ram,
        vram_free=free.vram,
        verdict="fits_cpu",
        **need,
    )
    return _judge(out, shape, free, n_ctx, cache_type_k, cache_type_v, flash_attn, n_ubatch)


def _gpu_layers(shape: ModelShape, n_gpu_layers: int) -> int:
    return shape.n_layers if n_gpu_layers < 0 else min(n_gpu_layers, shape.n_layers)


def _needs(
    shape: ModelShape, gpu: int, n_ctx: int, type_k: str, type_v: str, flash_attn: bool, n_ubatch: int
) -> dict[str, int]:
    """Bytes on each side when `gpu` layers are offloaded (the output layer first, then the last blocks)."""
    blocks_gpu = range(shape.n_layer - max(gpu - 1, 0), shape.n_layer) if gpu else range(0)
    weights_gpu = sum(shape.layer_bytes[i] for i in blocks_gpu)
    if gpu:
        weights_gpu += shape.output_bytes + (shape.input_bytes if shape.tied_output else 0)
    kv = kv_bytes(shape, n_ctx, type_k, type_v)
    kv_gpu = kv_bytes(shape, n_ctx, type_k, type_v, blocks_gpu)
    compute = _compute_bytes(shape, n_ctx, n_ubatch, flash_attn)
    compute_gpu = compute if gpu else 0
    compute_cpu = compute if not gpu else shape.n_embd * n_ubatch * F32 * 4  # inputs staged on the host
    output = shape.n_vocab * F32  # one sequence's logits
    return {
        "weights": shape.weights,
        "weights_gpu": weights_gpu,
        "kv": kv,
        "kv_gpu": kv_gpu,
        "compute": compute_cpu + compute_gpu,
        "compute_gpu": compute_gpu,
        "ram_needed": shape.weights - weights_gpu + kv - kv_gpu + compute_cpu + output,
        "vram_needed": weights_gpu + kv_gpu + compute_gpu,
    }


def auto_gpu_layers(
    shape: ModelShape,
    free: FreeMemory,
    *,
    n_ctx: int,
    cache_type_k: str,
    cache_type_v: str,
    flash_attn: bool,
    n_ubatch: int = 512,
) -> int:
    """The most layers whose VRAM fits in what is free, less a margin (5%, at least 512 MiB)."""
    if not free.vram:
        return 0
    budget = free.vram - max(512 * MIB, free.vram // 20)
    best = 0
    for gpu in range(1, shape.n_layers + 1):
        need = _needs(shape, gpu, n_ctx, cache_type_k, cache_type_v, flash_attn, n_ubatch)
        if need["vram_needed"] > budget:
            break
        best = gpu
    return best


def _judge(
    out: Estimate,
    shape: ModelShape,
    free: FreeMemory,
    n_ctx: int,
    type_k: str,
    type_v: str,
    flash_attn: bool,
    n_ubatch: int,
) -> Estimate:
    if out.gpu_layers and free.vram is not None and out.vram_needed > free.vram:
        fit = auto_gpu_layers(
            shape, free, n_ctx=n_ctx, cache_type_k=type_k, cache_type_v=type_v, flash_attn=flash_attn,
            n_ubatch=n_ubatch,
        )  # fmt: skip
        out.verdict, out.short_by, out.layers_fit = "short_vram", out.vram_needed - free.vram, fit
        out.message = (
            f"Needs {gib(out.short_by)} more VRAM than is free: {fit} of {out.n_layers} layers fit "
            f"on the GPU (n_gpu_layers {fit}), or lower n_ctx."
        )
    elif free.ram is not None and out.ram_needed > free.ram:
        out.verdict, out.short_by = "short_ram", out.ram_needed - free.ram
        out.message = (
            f"Needs {gib(out.short_by)} more RAM than is free ({gib(out.ram_needed)} needed, "
            f"{gib(free.ram)} free): lower n_ctx, pick a smaller quant, or close other programs."
        )
    elif out.gpu_layers >= out.n_layers:
        out.verdict = "fits_gpu"
        out.message = f"Fits on the GPU: all {out.n_layers} layers, {gib(out.vram_needed)} of VRAM."
    elif out.gpu_layers:
        out.verdict = "partial_gpu"
        out.message = (
            f"{out.gpu_layers} of {out.n_layers} layers on the GPU ({gib(out.vram_needed)} VRAM), "
            f"the rest on the CPU ({gib(out.ram_needed)} RAM)."
        )
    else:
        out.verdict = "fits_cpu"
        out.message = f"Fits in RAM: {gib(out.ram_needed)} needed" + (
            f", {gib(free.ram)} free." if free.ram is not None else "."
        )
    return out


def gib(n: int) -> str:
    """Bytes for people: 1.2 GB, 34 MB, 300 KB."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / MIB:.0f} MB" if n >= MIB else f"{n / 1024:.0f} KB"


def free_memory(status: dict[str, Any] | None = None) -> FreeMemory:
    """Free RAM now, and free VRAM on the GPUs llama.cpp can offload to (None when it cannot)."""
    from .gpu import gpu_status
    from .sysinfo import available_memory

    status = status if status is not None else gpu_status()
    vram: int | None = None
    devices = [d for d in status.get("devices", []) if d.get("vram_total_mb") is not None]
    if status.get("available") and devices and status.get("cuda_build") is not False:
        vram = sum(((d["vram_total_mb"] or 0) - (d.get("vram_used_mb") or 0)) * MIB for d in devices)
    return FreeMemory(ram=available_memory(), vram=vram, devices=len(devices))
