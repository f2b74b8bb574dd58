"""Per-model settings: each model file remembers the load settings it last loaded with, and its own
sampling defaults, in <data_dir>/model_settings.json (written atomically, the previous version kept as .bak).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import ModelSettings
from .errors import InvalidInput
from .fsutil import atomic_write
from .params import invalid_from_validation, parse_params

FILE_NAME = "model_settings.json"
LOAD_KEYS = ("n_ctx", "n_gpu_layers", "n_batch", "flash_attn", "cache_type_k", "cache_type_v", "chat_format")
NAME_MAX = 255


def check_load_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Only LOAD_KEYS, each valid as in config/model_config.yaml; raises InvalidInput naming the key."""
    unknown = sorted(set(values) - set(LOAD_KEYS))
    if unknown:
        raise InvalidInput(f"Unknown model setting '{unknown[0]}'.", field=unknown[0])
    try:
        checked = ModelSettings.model_validate(values).model_dump()
    except ValidationError as exc:
        raise invalid_from_validation(exc) from None
    return {k: checked[k] for k in LOAD_KEYS if k in values}


class ModelSettingsStore:
    """{file name: {"load": {...}, "sampling": {...}, "updated_at": ...}} in one JSON file."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def get(self, name: str) -> dict[str, Any]:
        """{"load": {...}, "sampling": {...}} for the model file `name` (empty when nothing is remembered)."""
        entry = self._read().get(name) or {}
        return {"load": dict(entry.get("load") or {}), "sampling": dict(entry.get("sampling") or {})}

    def remember(self, name: str, load: dict[str, Any]) -> None:
        """Record the settings `name` just loaded with (its "last good" ones)."""
        self._update(name, load=check_load_settings(load))

    def set_sampling(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        """Replace the model's sampling defaults (validated as sampling parameters); {} clears them."""
        parsed = parse_params(values).model_dump()
        clean = {k: parsed[k] for k in values}
        self._update(name, sampling=clean)
        return clean

    def _update(self, name: str, **parts: Any) -> None:
        _check_name(name)
        with self._lock:
            data = self._read()
            entry = dict(data.get(name) or {})
            entry.update(parts, updated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            data[name] = entry
            body = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
            atomic_write(self.path, body)

    def _read(self) -> dict[str, dict[str, Any]]:
        """The stored entries; a damaged file or entry is reported in `problems` and skipped."""
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.problems.append(
                f"{FILE_NAME} could not be read ({exc}); models start from the config's settings until "
                "the next load rewrites it (the old file is kept as .bak)."
            )
            return {}
        if not isinstance(raw, dict):
            self.problems.append(f"{FILE_NAME} is not a JSON object; remembered model settings were skipped.")
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name, entry in raw.items():
            try:
                if not isinstance(entry, dict):
                    raise InvalidInput("not an object")
                load = check_load_settings(dict(entry.get("load") or {}))
                sampling = dict(entry.get("sampling") or {})
                parse_params(sampling)
                out[str(name)] = {**entry, "load": load, "sampling": sampling}
            except InvalidInput as exc:
                self.problems.append(f"Remembered settings for {name} were skipped: {exc.message}")
        return out


def _check_name(name: str) -> None:
    if not name or len(name) > NAME_MAX or "/" in name or "\\" in name or not name.isprintable():
        raise InvalidInput(f"{name[:80]!r} is not a model file name.", field="name")
