"""The prompt cache on disk: a slot's KV state is saved when it is evicted or the worker stops, and loaded
again when a chat with that prefix returns, so reopening a long chat after a restart evaluates only its
new turn.

Files live under <data_dir>/slot_cache/<model key>/: `<hash>.seq` is llama.cpp's sequence state
(`llama_state_seq_get_data`) and `<hash>.json` its sidecar: the tokens it holds, to find a match without
loading states, and the SHA-256 of the state file. Saving copies the state in memory on the decode thread
(a memcpy) and a writer thread hashes and writes it once no reply is being decoded (or after QUIET_WAIT_S),
so an evicted slot costs the next reply neither disk time nor CPU (a 2-core machine has none to spare).
A state still being written is loaded from memory, and so is one of the last few written (up to RAM_BYTES):
a chat that comes back soon is spared reading and checking its file. The model key names the model file by
name, size and modification time, and the KV cache types, so another file never shares a state.
The whole slot_cache folder is bounded (least recently used files go first, whichever model they belong
to). A state file is checked against its checksum before llama.cpp sees it: llama.cpp notices a truncated
file but would load flipped bits in the KV data as they are. A file that fails either check (truncated,
corrupt, from another model) is deleted, never used.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import queue
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("engine.slot_cache")

QUIET_WAIT_S = 30.0  # the longest a saved state waits for the decoding to stop before it is written
RAM_BYTES = 512 * 2**20  # states kept in memory after they are written, most recently used first


def model_key(model: Path, cache_type_k: str, cache_type_v: str) -> str:
    """The folder name for `model`'s states: a file of the same name and size but another modification time
    (replaced, re-downloaded, another quantisation) gets a folder of its own."""
    st = model.stat()
    return f"{model.stem[:60]}-{st.st_size}-{st.st_mtime_ns}-{cache_type_k}-{cache_type_v}"


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _read(path: Path) -> bytearray:
    """The whole file, read once into a buffer that ctypes can point llama.cpp at (a state can be
    hundreds of MB: no second copy)."""
    with path.open("rb") as f:
        data = bytearray(os.fstat(f.fileno()).st_size)
        n = f.readinto(data)
    del data[n:]  # a file that shrank meanwhile: what was read
    return data


class SlotCache:
    def __init__(
        self,
        lib: Any,
        ctx: Any,
        folder: Path,
        *,
        max_bytes: int,
        min_tokens: int = 64,
        ram_bytes: int = RAM_BYTES,
    ) -> None:
        self.lib, self.ctx, self.folder = lib, ctx, folder
        self.max_bytes, self.min_tokens, self.ram_bytes = max_bytes, min_tokens, ram_bytes
        self._index: dict[str, list[int]] = {}  # hash -> tokens of the saved state
        self._sums: dict[str, str] = {}  # hash -> SHA-256 of its state file
        self._pending: dict[str, tuple[list[int], memoryview]] = {}  # hash -> (tokens, state) not yet on disk
        self._recent: OrderedDict[str, memoryview] = OrderedDict()  # written states still in memory
        self._hurry = False  # flush(): write now, decoding or not
        self._go = threading.Event()  # set while nothing is decoded, or in a flush()
        self._go.set()
        self._lock = threading.Lock()
        self._writes: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None  # the writer, started by the first save
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
        """Save sequence `seq_id`, which holds `tokens`, unless it is short or already saved. The state is
        copied now; the writer thread puts it on disk."""
        if len(tokens) < self.min_tokens:
            return
        name = self.key(tokens)
        with self._lock:
            if name in self._pending:
                return
            if name in self._index:
                (self.folder / f"{name}.seq").touch()
                return
        size = self.lib.llama_state_seq_get_size(self.ctx, seq_id)
        buf = (ctypes.c_uint8 * size)()
        n = self.lib.llama_state_seq_get_data(self.ctx, buf, size, seq_id)
        if not n:
            return
        with self._lock:
            self._pending[name] = (list(tokens), memoryview(buf).cast("B")[:n])
        self._writes.put(name)
        self._writer()

    def decoding(self, busy: bool) -> None:
        """The scheduler says whether replies are being decoded: states wait for the end to be written."""
        with self._lock:
            if busy and not self._hurry:
                self._go.clear()
            else:
                self._go.set()

    def flush(self) -> None:
        """Wait until every state saved so far is on disk."""
        with self._lock:
            self._hurry = True
            self._go.set()
        self._writes.join()

    def _writer(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="slot-cache-writer", daemon=True)
            self._thread.start()

    def _write_loop(self) -> None:
        while True:
            name = self._writes.get()
            # a state is saved as a new reply starts (its slot was evicted): write it when the decoding stops
            self._go.wait(QUIET_WAIT_S)
            try:
                self._write(name)
            except OSError as exc:  # a full disk costs the cache, never a reply
                log.warning("could not write slot cache file %s: %s", name, exc)
                with self._lock:
                    self._pending.pop(name, None)
            finally:
                self._writes.task_done()

    def _write(self, name: str) -> None:
        with self._lock:
            if name not in self._pending:
                return  # dropped meanwhile
            tokens, data = self._pending[name]
        digest = hashlib.sha256(data).hexdigest()
        tmp = self.folder / f"{name}.seq.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / f"{name}.seq")
        sidecar = self.folder / f"{name}.json.tmp"
        sidecar.write_bytes(orjson.dumps({"tokens": tokens, "sha256": digest}))
        os.replace(sidecar, self.folder / f"{name}.json")
        with self._lock:
            self._index[name], self._sums[name] = tokens, digest
            self._pending.pop(name, None)
            self._keep(name, data)
        self._prune()

    def _keep(self, name: str, data: memoryview) -> None:
        """Hold a written state in memory, dropping the least recently used ones beyond ram_bytes (under the
        lock)."""
        self._recent[name] = data
        self._recent.move_to_end(name)
        held = sum(len(d) for d in self._recent.values())
        while held > self.ram_bytes and self._recent:
            held -= len(self._recent.popitem(last=False)[1])

    def best(self, prompt: list[int]) -> tuple[str, int] | None:
        """The saved state that shares the longest prefix with `prompt` (all but its last token), and that
        length; None under min_tokens. A state may go on past the prompt's own tokens: a reply's sampled
        tokens are not always how its text tokenizes again in the next prompt, so only the shared part is
        kept once loaded."""
        found: tuple[str, int] | None = None
        limit = len(prompt) - 1
        with self._lock:
            saved = [*self._index.items(), *((k, v[0]) for k, v in self._pending.items())]
        for name, tokens in saved:
            if tokens[:1] != prompt[:1]:
                continue
            n = min(common_prefix(tokens, prompt), limit)
            if n >= self.min_tokens and (found is None or n > found[1]):
                found = (name, n)
        return found

    def load(self, name: str, seq_id: int) -> list[int] | None:
        """Load state `name` into sequence `seq_id` (which must be empty); its tokens, or None if unusable."""
        with self._lock:
            pending = self._pending.get(name)
            held = pending[1] if pending else self._recent.get(name)
            if held is not None and not pending:
                self._recent.move_to_end(name)
            expected = pending[0] if pending else self._index.get(name, [])
            digest = None if held is not None else self._sums.get(name)  # memory needs no checksum
        data: memoryview | bytearray
        try:
            data = held if held is not None else _read(self.folder / f"{name}.seq")
        except OSError:
            data = bytearray()
        if not data or (digest is not None and hashlib.sha256(data).hexdigest() != digest):
            log.warning("slot cache file %s.seq is unusable (missing or changed since saved): deleted", name)
            self._drop(name)
            return None
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)  # type: ignore[arg-type]
        if self.lib.llama_state_seq_set_data(self.ctx, buf, len(data), seq_id) != len(data):
            log.warning("slot cache file %s.seq is unusable (truncated, corrupt or foreign): deleted", name)
            self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), seq_id, 0, -1)
            self._drop(name)
            return None
        if not pending:
            with contextlib.suppress(OSError):  # pruned meanwhile: the state was still good
                os.utime(self.folder / f"{name}.seq")
        return list(expected)

    def _drop(self, name: str) -> None:
        with self._lock:
            self._index.pop(name, None)
            self._sums.pop(name, None)
            self._pending.pop(name, None)
            self._recent.pop(name, None)
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
