"""REST routes for getting models: list a Hugging Face repo's GGUF files, download with progress and cancel,
estimate a load's memory, and each model's remembered settings. Included by webui/api.py."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from engine import Runtime

TOKEN_HELP = "A Hugging Face token for a gated or private repo. Used for this request only; never stored."


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str = Field(max_length=1000, description="owner/name, owner/name:QUANT, or a huggingface.co link.")
    file: str | None = Field(None, max_length=500, description="A .gguf file in the repo, or a quant.")
    revision: str | None = Field(None, max_length=200, description="Branch, tag or commit; default main.")
    mmproj: bool | str | None = Field(
        None, description="Also download the repo's vision projector: true for the one offered, or its name."
    )
    token: str | None = Field(None, max_length=1000, description=TOKEN_HELP)


class SamplingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sampling: dict[str, Any] = Field(description="Sampling defaults while this model is loaded; {} clears.")


def build_hub_router(rt: Runtime) -> APIRouter:
    api = APIRouter()
    models = rt.models  # made now: it keeps the config's model settings from before any switch

    @api.get("/hub/files", summary="A Hugging Face repo's GGUF files with sizes, quants and split sets")
    def hub_files(
        repo: str = Query(max_length=1000, description="owner/name or a huggingface.co link"),
        revision: str | None = Query(None, max_length=200),
        x_hf_token: str | None = Header(None, description=TOKEN_HELP),
    ) -> dict[str, Any]:
        listing, _ = models.downloads.browse(repo, revision, token=x_hf_token)
        return listing.model_dump()

    @api.post("/models/download", summary="Start downloading a model; poll /api/models/downloads/{id}")
    def download(body: DownloadRequest) -> dict[str, Any]:
        status = models.downloads.start(
            body.repo, body.file, body.revision, token=body.token, mmproj=body.mmproj
        )
        return status.model_dump()

    @api.get("/models/downloads", summary="Downloads since the server started")
    def downloads() -> list[dict[str, Any]]:
        return [s.model_dump() for s in models.downloads.all()]

    @api.get("/models/downloads/{download_id}", summary="A download's progress: bytes, speed, time left")
    def download_status(download_id: str) -> dict[str, Any]:
        return models.downloads.get(download_id).model_dump()

    @api.delete("/models/downloads/{download_id}", summary="Cancel a download (its partial files go)")
    def cancel_download(download_id: str) -> dict[str, Any]:
        return models.downloads.cancel(download_id).model_dump()

    @api.get("/models/estimate", summary="Memory a load would take, and whether it fits (before loading)")
    def estimate(
        name: str = Query(max_length=500, description="A .gguf file in models/"),
        n_ctx: int | None = None,
        n_gpu_layers: int | Literal["auto"] | None = None,
        n_batch: int | None = None,
        flash_attn: bool | None = None,
        cache_type_k: str | None = Query(None, max_length=16),
        cache_type_v: str | None = Query(None, max_length=16),
    ) -> dict[str, Any]:
        overrides = {
            "n_ctx": n_ctx,
            "n_gpu_layers": n_gpu_layers,
            "n_batch": n_batch,
            "flash_attn": flash_attn,
            "cache_type_k": cache_type_k,
            "cache_type_v": cache_type_v,
        }
        return models.estimate(name, overrides).model_dump()

    @api.get("/models/{name}/settings", summary="A model's remembered load settings and sampling defaults")
    def model_settings(name: str) -> dict[str, Any]:
        rt.resolve_model(name)
        return models.store.get(name)

    @api.put("/models/{name}/settings", summary="Set a model's own sampling defaults")
    def put_model_settings(name: str, body: SamplingDefaults) -> dict[str, Any]:
        path = rt.resolve_model(name)
        models.store.set_sampling(path.name, body.sampling)
        if models.loaded_name() == path.name:
            models.apply_sampling(path.name)
        return models.store.get(path.name)

    return api
