"""The prompt cache on disk: a slot's KV state is saved when it is evicted or the worker stops, and loaded
again when a chat with that prefix returns, so reopening a long chat after a restart evaluates only its
new turn.

Files live under <data_dir>/slot_cache/<model key>/: `<hash>.seq` is llama.cpp's sequence state
(`llama_state_seq_save_file`, which records the tokens too) and `<hash>.json` its sidecar: the same tokens,
to find a match without loading states, and the SHA-256 of the state file. The model key names the model
file by name, size and modification time, and the KV cache types, so another file never shares a state.
The whole slot_cache folder is bounded (least recently used files go first, whichever model they belong
to). A state file is checked against its checksum before llama.cpp sees it: llama.cpp notices a truncated
file but would load flipped bits in the KV data as they are. A file that fails either check (truncated,
corrupt, from another model) is deleted, never used.
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


def model_key(model: Path, cache_type_k: str, cache_type_v: str) -> str:
    """The folder name for `model`'s states: a file of the same name and size but another modification time
    (replaced, re-downloaded, another quantisation) gets a folder of its own."""
    st = model.stat()
    return f"{model.stem[:60]}-{st.st_size}-{st.st_mtime_ns}-{cache_type_k}-{cache_type_v}"


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class SlotCache:
    def __init__(self, lib: Any, ctx: Any, folder: Path, *, max_bytes: int, min_tokens: int = 64) -> None:
        self.lib, self.ctx, self.folder = lib, ctx, folder
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        self._index: dict[str, list[int]] = {}  # hash -> tokens of the saved state
        self._sums: dict[str, str] = {}  # hash -> SHA-256 of its state file
        folder.mkdir(parents=True, exist_ok=True)
        for sidecar in folder.glob("*.json"):
            try:
                meta = orjson.loads(sidecar.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                meta = None
            ok = isinstance(meta, dict) and isinstance(meta.get("tokens"), list)
            if ok and isinstance(meta.get("sha256"), str) and (folder / f"{sidecar.stem}.seq").is_file():
                self._index[sidecar.stem], self._sums[sidecar.stem] = meta["tokens"], meta["sha256"]
            else:  # unreadable, or from before checksums: nothing vouches for its state file
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
        digest = file_sha256(tmp)
        os.replace(tmp, state)
        sidecar = self.folder / f"{name}.json.tmp"
        sidecar.write_bytes(orjson.dumps({"tokens": tokens, "sha256": digest}))
        os.replace(sidecar, self.folder / f"{name}.json")
        self._index[name], self._sums[name] = list(tokens), digest
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
        try:
            intact = file_sha256(self.folder / f"{name}.seq") == self._sums.get(name)
        except OSError:
            intact = False
        if not intact:
            log.warning("slot cache file %s.seq is unusable (missing or changed since saved): deleted", name)
            self._drop(name)
            return None
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
        self._sums.pop(name, None)
        for suffix in (".seq", ".json"):
            (self.folder / f"{name}{suffix}").unlink(missing_ok=True)

    def _prune(self) -> None:
        """Keep the whole slot_cache folder (every model's states) within max_bytes."""
        files: list[tuple[float, int, Path]] = []
        for path in self.folder.parent.glob("*/*.seq"):
            try:
                st = path.stat()
            except OSError:  # another worker pruned it just now
                continue
            files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            total -= size
            if path.parent == self.folder:
                self._drop(path.stem)
            else:
                for other in (path, path.with_suffix(".json")):
                    other.unlink(missing_ok=True)
