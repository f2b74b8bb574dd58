"""Our patches to llama.cpp (patches/llama.cpp, applied by scripts/install_llama_cpp.sh): the installed
build carries every one as it is in the repo, and the flash-attention patch changes no result. It skips
the cells of other chats in a shared KV cache without converting their mask, computes the heads of one
query in turn and prefetches the next live cells' K and V rows; a cell skipped by mistake, or a row
written to another query's place, would change the logits. With the real model in this process, four
chats decode in one KV cache that they share (kv_unified: the patched path, each query scanning the
others' cells, its own interleaved with theirs) and in a KV stream each (no other chat's cells to skip),
through the same batches: the logits must be equal bit for bit. A mistake that both layouts would make
alike is caught against attention without flash attention (other kernels, so equal only up to rounding)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.backends.batching import Batch
from engine.backends.llama_cpp import LlamaCppBackend
from engine.config import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_llama_cpp_carries_every_patch() -> None:
    marker = Path(sys.prefix) / "llama-cpp-patches.txt"
    assert marker.is_file(), "llama-cpp-python was not installed by scripts/install_llama_cpp.sh (make setup)"
    patches = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (ROOT / "patches" / "llama.cpp").glob("*.patch")
    }
    built = {name: digest for digest, name in (line.split() for line in marker.read_text().splitlines())}
    assert patches and built == patches, "the build predates a change to patches/llama.cpp: run make setup"


@pytest.fixture(scope="module")
def backends(model_path: Path) -> Iterator[dict[str, LlamaCppBackend]]:
    made: dict[str, LlamaCppBackend] = {}
    try:
        for name, unified, flash_attn in (
            ("shared", True, True),
            ("streams", False, True),
            ("plain", True, False),
        ):
            model = {
                "path": str(model_path),
                "n_ctx": 1024,
                "n_threads": 2,
                "parallel": 4,
                "kv_unified": unified,
                "flash_attn": flash_attn,
                "slot_cache": False,
            }
            settings, _ = load_settings(environ={}, overrides={"model": model})
            made[name] = LlamaCppBackend(settings.model, model_path)
        yield made
    finally:
        for backend in made.values():
            backend.close()


def final_logits(backend: LlamaCppBackend, prompts: list[list[int]], steps: int) -> np.ndarray:
    """Each prompt in a batch of its own (a run of cells per chat), then `steps` batches of one token per
    chat (their cells interleave); the logits of each chat's last token."""
    lib, ctx = backend._llama_cpp, backend.llm.ctx
    lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
    batch = Batch(lib, 128)

    def decode() -> None:
        batch.batch.n_tokens = batch.n
        assert lib.llama_decode(ctx, batch.batch) == 0
        batch.n = 0

    for seq, tokens in enumerate(prompts):
        for pos, token in enumerate(tokens):
            batch.add(token, pos, seq, pos == len(tokens) - 1)
        decode()
    for step in range(steps):
        for seq, tokens in enumerate(prompts):
            batch.add(200 + 37 * step + 11 * seq, len(tokens) + step, seq, True)
        decode()
    n_vocab = backend.llm.n_vocab()
    rows = [
        np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, i), shape=(n_vocab,)) for i in range(len(prompts))
    ]
    return np.stack(rows).copy()


@pytest.mark.slow
def test_a_shared_kv_cache_gives_the_logits_of_a_stream_per_chat(
    backends: dict[str, LlamaCppBackend],
) -> None:
    # Prompts of different lengths, so each chat's cells start at a different offset in the 16-cell blocks
    # of the decode steps. The third, of 90 tokens, goes through the tiled kernel (64 queries and more),
    # past tiles of the first two chats' cells; it starts at cell 64 of the shared cache, as at cell 0 of its
    # stream, so the tiles group its cells alike in both (tiles grouped otherwise round otherwise).
    prompts = [[1000 + 13 * i + seq for i in range(length)] for seq, length in enumerate((37, 27, 90, 21))]
    shared = final_logits(backends["shared"], prompts, steps=40)
    streams = final_logits(backends["streams"], prompts, steps=40)
    assert np.isfinite(shared).all()
    assert np.array_equal(shared, streams), np.abs(shared - streams).max()
    # Without flash attention each chat's logits differed by 0.08 to 0.19 on average (rounding); with every
    # tile of the tiled kernel skipped in both layouts, by 4.8 for the chat whose prompt went through it.
    plain = final_logits(backends["plain"], prompts, steps=40)
    assert np.abs(shared - plain).mean(axis=1).max() < 0.5, np.abs(shared - plain).mean(axis=1)
