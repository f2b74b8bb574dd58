"""The prompt cache on disk: a slot's KV state is saved when it is evicted or the worker stops, and loaded
again when a chat with that prefix returns, so reopening a long chat after a restart evaluates only its
new turn.

Files live under <data_dir>/slot_cache/<model key>/: `<hash>.seq` is llama.cpp's sequence state
(`llama_state_seq_save_file`, which records the tokens too) and `<hash>.json` the same tokens, to find a
match without loading states. The folder is bounded (least recently used files go first). A file that
llama.cpp cannot load (truncated, corrupt, from another model) is deleted, never used.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("engine.slot_cache")


class SlotCache:
    def __init__(self, lib: Any, ctx: Any, folder: Path, *, max_bytes: int, min_tokens: int = 64) -> None:
        self.lib, self.ctx, self.folder = lib, ctx, folder
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        self._index: dict[str, list[int]] = {}  # hash -> tokens of the saved state
        folder.mkdir(parents=True, exist_ok=True)
        for sidecar in folder.glob("*.json"):
            try:
                tokens = orjson.loads(sidecar.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                tokens = None
            if isinstance(tokens, list) and (folder / f"{sidecar.stem}.seq").is_file():
                self._index[sidecar.stem] = tokens
            else:
                self._drop(sidecar.stem)

    @staticmethod
    def key(tokens: list[int]) -> str:
        return hashlib.sha256(orjson.dumps(tokens)).hexdigest()[:32]

    def save(self, seq_id: int, tokens: list[int]) -> None:
        """Save sequence `seq_id`, which holds `tokens`, unless it is short or already saved."""
        if len(tokens) < self.min_tokens:
            return
        name = self.key(tokens)
        state = self.folder / f"{name}.seq"
        if name in self._index:
            os.utime(state)
            return
        tmp = self.folder / f"{name}.seq.tmp"
        arr = (self.lib.llama_token * len(tokens))(*tokens)
        written = self.lib.llama_state_seq_save_file(self.ctx, str(tmp).encode(), seq_id, arr, len(tokens))
        if not written:
            tmp.unlink(missing_ok=True)
            return
        os.replace(tmp, state)
        sidecar = self.folder / f"{name}.json.tmp"
        sidecar.write_bytes(orjson.dumps(tokens))
        os.replace(sidecar, self.folder / f"{name}.json")
        self._index[name] = list(tokens)
        self._prune()

    def best(self, prompt: list[int]) -> tuple[str, int] | None:
        """The saved state that is the longest prefix of `prompt` (all but its last token), if any."""
        found: tuple[str, int] | None = None
        for name, tokens in self._index.items():
            n = len(tokens)
            if n < len(prompt) and prompt[:n] == tokens and (found is None or n > found[1]):
                found = (name, n)
        return found

    def load(self, name: str, seq_id: int) -> list[int] | None:
        """Load state `name` into sequence `seq_id` (which must be empty); its tokens, or None if unusable."""
        expected = self._index.get(name, [])
        cap = len(expected) or 1
        out = (self.lib.llama_token * cap)()
        count = ctypes.c_size_t(0)
        path = str(self.folder / f"{name}.seq").encode()
        read = self.lib.llama_state_seq_load_file(self.ctx, path, seq_id, out, cap, ctypes.byref(count))
        if not read or count.value != len(expected) or list(out[: count.value]) != expected:
            log.warning("slot cache file %s.seq is unusable (truncated, corrupt or foreign): deleted", name)
            self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), seq_id, 0, -1)
            self._drop(name)
            return None
        os.utime(self.folder / f"{name}.seq")
        return expected

    def _drop(self, name: str) -> None:
        self._index.pop(name, None)
        for suffix in (".seq", ".json"):
            (self.folder / f"{name}{suffix}").unlink(missing_ok=True)

    def _prune(self) -> None:
        files = sorted(self.folder.glob("*.seq"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.max_bytes:
                break
            total -= path.stat().st_size
            self._drop(path.stem)
