"""Hugging Face Hub: read what a user typed (a repo id, a Hub URL, `repo:quant`) and list a repo's GGUF files.

Every call goes through huggingface_hub. The endpoint is HF_ENDPOINT (read at each call, so a mirror or a
test Hub can be set without a restart), else https://huggingface.co. A token is passed per call and never
stored or logged here; without one, huggingface_hub uses HF_TOKEN or its own saved login.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field

from .errors import EngineError, HubAccessDenied, HubUnavailable, InvalidInput, NotFound
from .models import quantization_in_name

log = logging.getLogger("engine.hub")

DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The quant llama-server picks when none is named, then other common middle-of-the-road ones.
PREFERRED_QUANTS = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q8_0")


class HubRef(BaseModel):
    """A parsed reference: `file` is a file path in the repo, a quant tag (Q4_K_M), or None."""

    repo: str
    revision: str | None = None
    file: str | None = None


class RemoteFile(BaseModel):
    path: str  # in the repo
    size: int
    sha256: str | None = None  # LFS files (every real GGUF on the Hub)
    blob_id: str | None = None  # git blob sha1, for small files kept in git itself


class HubModel(BaseModel):
    """One downloadable model: a single .gguf file, or every part of a split set, or a projector."""

    name: str  # the file name it gets in models/ (the first part, for a split set)
    kind: Literal["model", "mmproj"] = "model"
    files: list[RemoteFile]
    size_bytes: int
    quantization: str | None = None
    parts: int = 1
    complete: bool = True  # False when a split set misses parts on the Hub
    mmproj: list[str] = Field(default_factory=list, description="Projectors offered with this model.")


class RepoListing(BaseModel):
    repo: str
    revision: str  # as asked ("main" by default)
    commit: str | None = None  # the commit the listing (and so the download) is pinned to
    gated: bool = False
    files: list[HubModel] = Field(default_factory=list)

    def get(self, name: str) -> HubModel | None:
        return next((m for m in self.files if m.name == name), None)


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def parse_ref(text: str) -> HubRef:
    """`owner/name`, `owner/name:Q4_K_M`, `owner/name:file.gguf`, `owner/name@rev`, or a Hub URL.

    Raises InvalidInput naming what is wrong.
    """
    text = (text or "").strip()
    if not text:
        raise InvalidInput(
            "Type a Hugging Face repo, e.g. bartowski/SmolLM2-135M-Instruct-GGUF.", field="repo"
        )
    if len(text) > 1000 or _CONTROL.search(text):
        raise InvalidInput("That is not a Hugging Face repo name or URL.", field="repo")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")) or lowered.split("/", 1)[0] in HUB_HOSTS:
        return _parse_url(text)
    rest, _, file = text.partition(":")
    repo, _, revision = rest.partition("@")
    return _checked(repo, revision or None, file or None)


def _parse_url(text: str) -> HubRef:
    url = urlsplit(text if "://" in text else "https://" + text)
    allowed = HUB_HOSTS | {urlsplit(hub_endpoint()).netloc.lower()}
    if url.netloc.lower() not in allowed:
        raise InvalidInput(f"{url.netloc} is not Hugging Face: paste a huggingface.co link.", field="repo")
    parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
    if parts[:1] == ["models"]:
        parts = parts[1:]
    if len(parts) < 2:
        raise InvalidInput("The link does not name a repo (huggingface.co/owner/name).", field="repo")
    repo, revision, file = f"{parts[0]}/{parts[1]}", None, None
    if len(parts) >= 4 and parts[2] in ("blob", "resolve", "tree"):
        revision, file = parts[3], "/".join(parts[4:]) or None
    elif len(parts) > 2:
        raise InvalidInput("Paste the repo's page or a file's link.", field="repo")
    return _checked(repo, revision, file)


def _checked(repo: str, revision: str | None, file: str | None) -> HubRef:
    repo = repo.strip()
    if not _REPO_ID.match(repo) or ".." in repo or "--" in repo:
        raise InvalidInput(
            f"{repo[:100]!r} is not a repo id: it looks like owner/name, e.g. "
            "bartowski/SmolLM2-135M-Instruct-GGUF.",
            field="repo",
        )
    if revision is not None and (len(revision) > 200 or not revision.strip()):
        raise InvalidInput("That revision is not a branch, tag or commit.", field="revision")
    if file is not None:
        check_repo_path(file)
    return HubRef(repo=repo, revision=revision, file=file)


def check_repo_path(path: str) -> str:
    if (
        len(path) > 500
        or path.startswith("/")
        or "\\" in path
        or ".." in path.split("/")
        or _CONTROL.search(path)
    ):
        raise InvalidInput(f"{path[:100]!r} is not a file in a repo.", field="file")
    return path


def list_repo(
    repo: str, revision: str | None = None, *, token: str | None = None, endpoint: str | None = None
) -> RepoListing:
    """The repo's GGUF files with sizes, sha256, quantisation, split sets grouped and projectors offered."""
    from huggingface_hub import HfApi

    ref = _checked(repo, revision, None)
    api = HfApi(endpoint=endpoint or hub_endpoint(), token=token or None)
    try:
        info = api.model_info(ref.repo, revision=revision, files_metadata=True)
    except Exception as exc:
        raise hub_error(exc, ref.repo, revision) from None
    files = []
    for s in info.siblings or []:
        if s.rfilename.lower().endswith(".gguf"):
            lfs = s.lfs
            size = lfs.size if lfs else s.size
            files.append(
                RemoteFile(
                    path=s.rfilename,
                    size=int(size or 0),
                    sha256=lfs.sha256 if lfs else None,
                    blob_id=s.blob_id,
                )
            )
    return RepoListing(
        repo=ref.repo,
        revision=revision or "main",
        commit=info.sha,
        gated=bool(info.gated),
        files=group_files(files),
    )


def group_files(files: list[RemoteFile]) -> list[HubModel]:
    """Models (split sets as one), smallest first, then projectors; each model offered its projectors."""
    sets: dict[tuple[str, str], list[tuple[int, RemoteFile]]] = {}
    single: list[HubModel] = []
    for f in files:
        base = f.path.rsplit("/", 1)[-1]
        kind: Literal["model", "mmproj"] = "mmproj" if "mmproj" in base.lower() else "model"
        m = _SPLIT.match(base)
        if m and kind == "model":
            key = (f.path[: len(f.path) - len(base)] + m["stem"], m["total"])
            sets.setdefault(key, []).append((int(m["part"]), f))
            continue
        single.append(_model(base, kind, [f]))
    for (_, total), parts in sets.items():
        parts.sort(key=lambda p: p[0])
        ordered = [f for _, f in parts]
        model = _model(ordered[0].path.rsplit("/", 1)[-1], "model", ordered)
        model.complete = [n for n, _ in parts] == list(range(1, int(total) + 1))
        single.append(model)
    models = sorted((m for m in single if m.kind == "model"), key=lambda m: (m.size_bytes, m.name))
    projectors = sorted((m for m in single if m.kind == "mmproj"), key=lambda m: (m.size_bytes, m.name))
    for model in models:
        folder = _folder(model.files[0].path)
        near = [p.name for p in projectors if _folder(p.files[0].path) == folder]
        model.mmproj = near or [p.name for p in projectors]
    return models + projectors


def _model(name: str, kind: Literal["model", "mmproj"], files: list[RemoteFile]) -> HubModel:
    return HubModel(
        name=name,
        kind=kind,
        files=files,
        size_bytes=sum(f.size for f in files),
        quantization=quantization_in_name(name),
        parts=len(files),
    )


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def pick(listing: RepoListing, wanted: str | None) -> HubModel:
    """The entry `wanted` names (its file name, a repo path of one of its files, or a quant tag); with
    nothing named, the only model, else the preferred quant. Raises NotFound or InvalidInput."""
    models = [m for m in listing.files if m.kind == "model"]
    if wanted:
        for m in listing.files:
            if wanted == m.name or any(wanted == f.path for f in m.files):
                return m
        by_quant = [m for m in models if (m.quantization or "").upper() == wanted.upper()]
        if by_quant:
            return by_quant[0]
        raise NotFound(
            f"{listing.repo} has no GGUF file or quant {wanted!r}. It has: {_names(listing)}.", field="file"
        )
    if not models:
        raise NotFound(f"{listing.repo} has no GGUF model files.", field="repo")
    if len(models) == 1:
        return models[0]
    for quant in PREFERRED_QUANTS:
        for m in models:
            if m.quantization == quant:
                return m
    raise InvalidInput(f"{listing.repo} has several models; pick one: {_names(listing)}.", field="file")


def _names(listing: RepoListing) -> str:
    names = [m.name for m in listing.files]
    return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "") or "none"


def hub_error(
    exc: BaseException, repo: str, revision: str | None = None, file: str | None = None
) -> EngineError:
    """A huggingface_hub or network exception as one of ours, with a message a user can act on."""
    from huggingface_hub import errors as hf

    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, hf.GatedRepoError):
        return HubAccessDenied(
            f"{repo} is gated: accept its terms on huggingface.co, then give a token with access "
            "(HF_TOKEN, or the token field).",
            field="token",
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return NotFound(f"{repo} has no branch, tag or commit {revision!r}.", field="revision")
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return NotFound(f"{repo} has no file {file!r}.", field="file")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return NotFound(
            f"No model repo {repo} on Hugging Face (a private repo also needs a token).", field="repo"
        )
    status = _status(exc)
    if status in (401, 403):
        return HubAccessDenied(f"Hugging Face refused access to {repo}: check the token.", field="token")
    if status is not None:
        return HubUnavailable(f"Hugging Face answered {status} for {repo}; try again later.")
    log.warning("hub request for %s failed: %s", repo, type(exc).__name__)
    return HubUnavailable(
        f"Could not reach {hub_endpoint()} ({type(exc).__name__}). Check the network, or HF_ENDPOINT."
    )


def _status(exc: BaseException) -> int | None:
    response: Any = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None
