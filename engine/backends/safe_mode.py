"""What the worker learnt about this machine: model files whose load or warm-up crashed with weight
repacking on. Kept under the data dir, per model file and CPU, so later starts do not crash first."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import orjson

from ..fsutil import atomic_write
from .repack import cpu_flags

log = logging.getLogger("engine.worker")


def machine_key(model: Path) -> str:
    """The model file (name, size) and this CPU's feature flags: a crash on one says nothing of another."""
    try:
        size = model.stat().st_size
    except OSError:
        size = -1
    cpu = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]
    return f"{model.name}:{size}:{cpu}"


class SafeModeMemory:
    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / "worker" / "safe_mode.json" if data_dir else None

    def _read(self) -> dict[str, dict[str, object]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            log.warning("ignoring unreadable %s", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def recall(self, model: Path) -> str | None:
        """The reason repacking was turned off for this model on this machine, if it was."""
        entry = self._read().get(machine_key(model))
        return str(entry.get("reason")) if isinstance(entry, dict) else None

    def remember(self, model: Path, reason: str) -> None:
        if self.path is None:
            return
        data = self._read()
        data[machine_key(model)] = {"reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2), keep_backup=False)
        except OSError as exc:
            log.warning("could not remember safe mode in %s: %s", self.path, exc)
