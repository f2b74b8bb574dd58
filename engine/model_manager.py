"""Getting and loading models, shared by the UI, the API and the terminal: downloads, the memory estimate
before a load, and each model's remembered settings applied when it is loaded again.

A load takes, for each setting: what the caller gives, else what this model last loaded with, else the
config file's value. `n_gpu_layers: "auto"` becomes the most layers that fit in free VRAM.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ROOT
from .downloads import DownloadManager
from .errors import EngineError, InvalidInput
from .memory_estimate import Estimate, FreeMemory, estimate, free_memory
from .model_settings import LOAD_KEYS, ModelSettingsStore, check_load_settings
from .models import GgufError, ModelFile, list_models, model_in_folder
from .params import SamplingParams

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("engine.models")


class ModelManager:
    """A runtime's models (`Runtime.models`): the files in models/, their memory estimates and remembered
    settings, loading one, and `downloads` from Hugging Face."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = ModelSettingsStore(rt.data_dir)
        self.downloads = DownloadManager(rt.models_dir)
        self.config_model = rt.settings.model.model_copy()  # the config file's, before any switch
        self.config_generation = rt.settings.generation.model_copy()

    def settings_for(self, name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The load settings a load of `name` would use (LOAD_KEYS; n_gpu_layers may be "auto")."""
        base = {k: getattr(self.config_model, k) for k in LOAD_KEYS}
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        auto = given.get("n_gpu_layers") == "auto"
        if auto:
            given.pop("n_gpu_layers")
        merged = {**base, **self.store.get(name)["load"], **check_load_settings(given)}
        if auto:
            merged["n_gpu_layers"] = "auto"
        return merged

    def estimate(
        self, name: str, overrides: dict[str, Any] | None = None, free: FreeMemory | None = None
    ) -> Estimate:
        """What loading `name` with these settings takes, and whether it fits. Raises InvalidInput."""
        path = model_in_folder(self.rt.models_dir, name, project_root=ROOT)  # nothing outside models/
        s = self.settings_for(path.name, overrides)
        try:
            return estimate(
                path,
                n_ctx=s["n_ctx"] * self.config_model.kv_streams,  # a KV cache per slot, or one shared
                n_gpu_layers=s["n_gpu_layers"],
                cache_type_k=s["cache_type_k"],
                cache_type_v=s["cache_type_v"],
                flash_attn=s["flash_attn"],
                n_batch=s["n_batch"],
                free=free,
            )
        except (GgufError, OSError) as exc:
            raise InvalidInput(f"Cannot estimate {path.name}: {exc}", field="path") from None

    def load(self, name: str, **overrides: Any) -> dict[str, Any]:
        """Load `name` with its remembered settings under `overrides`; on success remember them.
        The model's own sampling defaults then apply to new turns. The current model stays on failure."""
        path = model_in_folder(self.rt.models_dir, name, project_root=ROOT)  # nothing outside models/
        force = bool(overrides.pop("force", False))
        s = self.settings_for(path.name, overrides)
        if s["n_gpu_layers"] == "auto":
            s["n_gpu_layers"] = self.estimate(path.name, s).n_gpu_layers
        if not force:
            self._check_fits(path.name, s)
        info = self.rt.switch_model(str(path), **s)
        try:
            self.store.remember(path.name, s)
        except Exception as exc:  # the model is loaded; a failed save costs only the memory of it
            log.warning("could not remember settings for %s: %s", path.name, exc)
        self.apply_sampling(path.name)
        return info

    def _check_fits(self, name: str, settings: dict[str, Any]) -> None:
        """Refuse a load that the estimate says cannot fit (a huge n_ctx, say) before it starts."""
        try:
            est = self.estimate(name, settings)
        except EngineError:  # an unreadable header: the load itself says what is wrong
            return
        if est.verdict in ("short_ram", "short_vram"):
            raise InvalidInput(f'Not loaded: {est.message} ("force": true loads it anyway.)', field="n_ctx")

    def apply_sampling(self, name: str) -> None:
        """Config sampling defaults, with this model's own on top."""
        own = self.store.get(name)["sampling"]
        base = self.config_generation.model_dump(exclude_unset=True)
        self.rt.settings.generation = SamplingParams.model_validate({**base, **own})

    def files(self) -> list[ModelFile]:
        """The GGUF files in models/, with what their headers say (or why they cannot be read)."""
        return list_models(self.rt.models_dir)

    def catalog(self) -> list[dict[str, Any]]:
        """Every model file with its header facts, remembered settings and memory estimate."""
        free = free_memory()
        out = []
        for m in list_models(self.rt.models_dir):
            row: dict[str, Any] = m.model_dump(mode="json")
            row["settings"] = self.store.get(m.name)
            row["estimate"] = None
            if m.error is None:
                try:
                    row["estimate"] = self.estimate(m.name, free=free).model_dump()
                except EngineError as exc:
                    row["estimate_error"] = exc.message
            out.append(row)
        return out

    def loaded_name(self) -> str | None:
        info = self.rt.model_info()
        name = info.get("name") if info.get("loaded") else None
        return Path(name).name if isinstance(name, str) else None
