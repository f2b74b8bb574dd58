"""Model downloads from the Hugging Face Hub, with progress, cancel and resume.

Each file is fetched with huggingface_hub's own pieces (`get_hf_file_metadata`, `http_get` with
`resume_size`) into `models/.downloads/<sha256>.part`, so an interrupted download (a killed server, a lost
network) continues from where it stopped. Once every file of a job is complete and matches the Hub's
sha256, the files move into models/ with a hard link, which never replaces an existing file. A cancel, a
failed check or a full disk removes the partial files: nothing half-written is left behind.

The token, when given, is only an argument of the job's thread: it is never logged, returned or saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from .errors import Conflict, EngineError, HubAccessDenied, InvalidInput, NotFound, StorageError
from .hub import (
    HubModel,
    RemoteFile,
    RepoListing,
    check_repo_path,
    hub_endpoint,
    hub_error,
    list_repo,
    parse_ref,
    pick,
)

log = logging.getLogger("engine.downloads")

PARTS_DIR = ".downloads"
CHUNK_BYTES = 512 * 1024  # progress and cancel are seen once per chunk (huggingface_hub reads 10 MB)
RESERVE_BYTES = 256 * 1024 * 1024  # keep this much disk free after a download
SPEED_WINDOW_S = 5.0
State = Literal["downloading", "verifying", "done", "failed", "cancelled"]


class Cancelled(Exception):
    pass


class DownloadStatus(BaseModel):
    """What GET /api/models/downloads/{id} returns. Never holds the token."""

    id: str
    repo: str
    revision: str
    commit: str | None = None
    name: str  # the model's file name in models/ (the first part of a split set)
    files: list[str]  # every file name this job puts in models/
    state: State = "downloading"
    bytes_done: int = 0
    bytes_total: int = 0
    speed_bps: float | None = None
    eta_s: float | None = None
    error: str | None = None
    resumable: bool = False  # a failed download whose partial files were kept: start it again to resume
    resumed_from: int = 0  # bytes already on disk when this job started
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None


class _Job:
    def __init__(self, status: DownloadStatus, files: list[RemoteFile], present: set[str]) -> None:
        self.status = status
        self.files = files
        self.present = present  # names already in models/ with the right size: verified, not fetched
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.base = 0  # bytes of the files finished before the current one
        self.samples: deque[tuple[float, int]] = deque()
        self.thread: threading.Thread | None = None

    def progress(self, done: int) -> None:
        """`done` bytes of the job are on disk; raises Cancelled once a cancel was asked for."""
        now = time.monotonic()
        with self.lock:
            self.status.bytes_done = done
            self.samples.append((now, done))
            while len(self.samples) > 2 and now - self.samples[0][0] > SPEED_WINDOW_S:
                self.samples.popleft()
            t0, b0 = self.samples[0]
            if now - t0 > 0.2 and done >= b0:
                speed = (done - b0) / (now - t0)
                self.status.speed_bps = round(speed, 1)
                left = self.status.bytes_total - done
                self.status.eta_s = round(left / speed, 1) if speed > 0 else None
        if self.cancel.is_set():
            raise Cancelled

    def snapshot(self) -> DownloadStatus:
        with self.lock:
            return self.status.model_copy()


class WriteFailed(OSError):
    """Writing the partial file failed (a full disk, a read-only folder), not the network."""


class Interrupted(Exception):
    """The transfer broke off (connection lost, timeout, a short body): the partial file is kept."""


class _PartWriter:
    """The file huggingface_hub's http_get writes to: reports progress, stops on cancel, and tells a
    failed write (our disk) apart from a failed read (the network)."""

    def __init__(self, raw: Any, job: _Job) -> None:
        self.raw = raw
        self.job = job

    def write(self, data: bytes) -> int:
        try:
            n = int(self.raw.write(data))
        except OSError as exc:
            raise WriteFailed(exc.errno, exc.strerror) from None
        self.job.progress(self.job.base + self.raw.tell())
        return n

    def tell(self) -> int:
        return int(self.raw.tell())

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.raw.seek(offset, whence))

    def truncate(self, size: int | None = None) -> int:
        return int(self.raw.truncate(size))


class _Quiet:
    """A progress bar that shows nothing: the job's status is the progress."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float | None = 1) -> None:
        return None


class DownloadManager:
    """Start, watch and cancel downloads into `models_dir`. Thread-safe; one thread per running job."""

    def __init__(
        self, models_dir: Path, *, endpoint: str | None = None, reserve_bytes: int = RESERVE_BYTES
    ) -> None:
        self.models_dir = Path(models_dir)
        self.parts_dir = self.models_dir / PARTS_DIR
        self.endpoint = endpoint
        self.reserve_bytes = reserve_bytes
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # --- public -------------------------------------------------------------------------------------

    def browse(
        self, repo: str, revision: str | None = None, *, token: str | None = None
    ) -> tuple[RepoListing, str | None]:
        """A repo's GGUF files (`repo`: owner/name or a huggingface.co link, maybe naming a file or quant),
        and the name of the one `start` would pick for it, or None when it cannot pick one."""
        ref = parse_ref(repo)
        listing = list_repo(ref.repo, revision or ref.revision, token=token, endpoint=self.endpoint)
        try:
            return listing, pick(listing, ref.file).name
        except EngineError:
            return listing, None

    def start(
        self,
        repo: str,
        file: str | None = None,
        revision: str | None = None,
        *,
        token: str | None = None,
        mmproj: str | bool | None = None,
    ) -> DownloadStatus:
        """Check everything that can be checked first (the repo, the file, existing files, free disk),
        then download in a thread. Raises NotFound, InvalidInput, Conflict, StorageError, Hub errors."""
        ref = parse_ref(repo)
        if file is not None:
            check_repo_path(file)
        revision = revision or ref.revision
        wanted = file or ref.file
        endpoint = self.endpoint or hub_endpoint()
        listing = list_repo(ref.repo, revision, token=token, endpoint=endpoint)
        if listing.gated and not (token or _saved_token()):
            raise HubAccessDenied(
                f"{ref.repo} is gated: accept its terms on huggingface.co, then give a token with access "
                "(HF_TOKEN, or the token field).",
                field="token",
            )
        model = pick(listing, wanted)
        if not model.complete:
            raise InvalidInput(f"{model.name} is a split model with parts missing on the Hub.", field="file")
        entries = [model, *self._projector(listing.files, model, mmproj)]
        files = [f for m in entries for f in m.files]
        names = [_name(f) for f in files]
        if len(set(names)) != len(names):
            raise InvalidInput("Two files of this download have the same name.", field="file")
        with self._lock:
            running = self._running_with(names)
            if running is not None:
                return running.snapshot()
            present = self._check_targets(files)
            self._check_disk(files, present)
            status = DownloadStatus(
                id="d-" + secrets.token_hex(6),
                repo=ref.repo,
                revision=listing.revision,
                commit=listing.commit,
                name=model.name,
                files=names,
                bytes_total=sum(f.size for f in files),
                resumed_from=sum(self._part_size(f) for f in files if _name(f) not in present),
            )
            job = _Job(status, files, present)
            self._jobs[status.id] = job
        revision_to_get = listing.commit or listing.revision
        job.thread = threading.Thread(
            target=self._run,
            args=(job, ref.repo, revision_to_get, endpoint, token),
            name=f"download-{status.id}",
            daemon=True,
        )
        log.info(
            "download %s: %s from %s@%s (%d bytes, %d already on disk)",
            status.id,
            ", ".join(names),
            ref.repo,
            status.revision,
            status.bytes_total,
            status.resumed_from,
        )
        job.thread.start()
        return job.snapshot()

    def get(self, job_id: str) -> DownloadStatus:
        return self._job(job_id).snapshot()

    def all(self) -> list[DownloadStatus]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in jobs]

    def cancel(self, job_id: str) -> DownloadStatus:
        """Ask a running job to stop (it removes its partial files); a finished job is forgotten."""
        job = self._job(job_id)
        job.cancel.set()
        if job.snapshot().state in ("done", "failed", "cancelled"):
            with self._lock:
                self._jobs.pop(job_id, None)
        return job.snapshot()

    def wait(self, job_id: str, timeout: float | None = None) -> DownloadStatus:
        job = self._job(job_id)
        if job.thread is not None:
            job.thread.join(timeout)
        return job.snapshot()

    # --- checks -------------------------------------------------------------------------------------

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"No download {job_id[:40]!r}: it finished before a restart, or never started.")
        return job

    @staticmethod
    def _projector(files: list[HubModel], model: HubModel, mmproj: str | bool | None) -> list[HubModel]:
        if not mmproj:
            return []
        name = model.mmproj[0] if mmproj is True and model.mmproj else mmproj
        found = next((m for m in files if m.kind == "mmproj" and m.name == name), None)
        if found is None:
            raise NotFound(f"This repo has no projector {str(mmproj)[:100]!r}.", field="mmproj")
        return [found]

    def _running_with(self, names: list[str]) -> _Job | None:
        for job in self._jobs.values():
            if job.status.state in ("downloading", "verifying") and set(job.status.files) & set(names):
                return job
        return None

    def _check_targets(self, files: list[RemoteFile]) -> set[str]:
        """Names already in models/ with the Hub's size (verified later, never fetched). A file of another
        size is a different file: refuse, since nothing is ever overwritten."""
        present = set()
        for f in files:
            target = self.models_dir / _name(f)
            if target.exists() or target.is_symlink():
                if target.is_file() and target.stat().st_size == f.size:
                    present.add(target.name)
                    continue
                raise Conflict(
                    f"{target.name} already exists in {self.models_dir} and is a different file. "
                    "Rename or remove it first: downloads never overwrite.",
                    field="file",
                )
        return present

    def _check_disk(self, files: list[RemoteFile], present: set[str]) -> None:
        need = sum(f.size - self._part_size(f) for f in files if _name(f) not in present)
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.models_dir).free
        except OSError as exc:
            raise StorageError(f"Cannot use {self.models_dir}: {exc.strerror or exc}.") from None
        if need + self.reserve_bytes > free:
            raise StorageError(
                f"Not enough disk space: the download needs {_gb(need)} (and {_gb(self.reserve_bytes)} kept "
                f"free), but {self.models_dir} has {_gb(free)} free. Nothing was downloaded."
            )

    def _part(self, f: RemoteFile) -> Path:
        key = f.sha256 or f.blob_id or hashlib.sha256(f.path.encode()).hexdigest()
        return self.parts_dir / f"{key}.part"

    def _part_size(self, f: RemoteFile) -> int:
        try:
            size = self._part(f).stat().st_size
        except OSError:
            return 0
        return size if size <= f.size else 0

    # --- the job thread -----------------------------------------------------------------------------

    def _run(self, job: _Job, repo: str, revision: str, endpoint: str, token: str | None) -> None:
        keep_parts = False
        try:
            for f in job.files:
                if _name(f) in job.present:
                    self._set(job, state="verifying")
                    _verify(self.models_dir / _name(f), f, job, existing=True)
                else:
                    self._fetch(job, f, repo, revision, endpoint, token)
                with job.lock:
                    job.base += f.size
            for f in job.files:
                if _name(f) not in job.present:
                    _place(self._part(f), self.models_dir / _name(f))
            self._finish(job, "done")
            log.info("download %s done", job.status.id)
        except Cancelled:
            self._finish(job, "cancelled")
            log.info("download %s cancelled", job.status.id)
        except Exception as exc:
            keep_parts = _is_network(exc)
            message = _message(exc, repo, revision, keep_parts)
            self._finish(job, "failed", error=message, resumable=keep_parts)
            log.warning("download %s failed: %s", job.status.id, message)
        finally:
            if job.snapshot().state != "done" and not keep_parts:
                for f in job.files:
                    if _name(f) not in job.present:
                        self._part(f).unlink(missing_ok=True)

    def _fetch(
        self, job: _Job, f: RemoteFile, repo: str, revision: str, endpoint: str, token: str | None
    ) -> None:
        from huggingface_hub import constants, file_download, hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_BYTES)
        self._set(job, state="downloading")
        url = hf_hub_url(repo, f.path, revision=revision, endpoint=endpoint)
        meta = file_download.get_hf_file_metadata(url, token=token or None, endpoint=endpoint)
        if meta.size is not None and meta.size != f.size:
            raise InvalidInput(f"{_name(f)} changed on the Hub while downloading; start again.")
        headers = build_hf_headers(token=token or None)
        if urlsplit(meta.location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a signed CDN link: the token stays with the Hub
        part = self._part(f)
        resume = self._part_size(f)
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            out = open(part, "r+b" if resume else "wb")  # noqa: SIM115 (closed below)
            out.truncate(resume)
            out.seek(resume)
        except OSError as exc:
            raise WriteFailed(exc.errno, exc.strerror) from None
        with out:
            job.progress(job.base + resume)
            try:
                file_download.http_get(
                    meta.location,
                    _PartWriter(out, job),  # type: ignore[arg-type]
                    resume_size=resume,
                    headers=headers,
                    expected_size=f.size,
                    displayed_filename=_name(f),
                    tqdm_class=_Quiet,  # type: ignore[arg-type]
                )
            except (WriteFailed, Cancelled):
                raise
            except Exception as exc:
                if hasattr(exc, "response"):  # the Hub answered with an error status
                    raise
                raise Interrupted(type(exc).__name__) from exc  # the transfer broke off: resumable
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise WriteFailed(exc.errno, exc.strerror) from None
        self._set(job, state="verifying")
        _verify(part, f, job, existing=False)

    def _set(self, job: _Job, **changes: Any) -> None:
        with job.lock:
            for key, value in changes.items():
                setattr(job.status, key, value)

    def _finish(self, job: _Job, state: State, **changes: Any) -> None:
        self._set(job, state=state, finished_at=time.time(), speed_bps=None, eta_s=None, **changes)


def _saved_token() -> str | None:
    """HF_TOKEN, or the login `hf auth login` saved: huggingface_hub sends it when no token is given."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:
        return None


def _name(f: RemoteFile) -> str:
    return f.path.rsplit("/", 1)[-1]


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _verify(path: Path, f: RemoteFile, job: _Job, *, existing: bool) -> None:
    """Hash the file and compare with the Hub's sha256 (git's blob sha1 for a file not in LFS)."""
    digest = hashlib.sha256() if f.sha256 else hashlib.sha1()
    expected = f.sha256 or f.blob_id
    if not f.sha256:
        digest.update(b"blob %d\0" % f.size)
    with open(path, "rb") as src:
        while block := src.read(4 << 20):
            digest.update(block)
            if job.cancel.is_set():
                raise Cancelled
    if expected and digest.hexdigest() != expected.lower():
        if existing:
            raise Conflict(
                f"{_name(f)} already exists in models/ with other contents than the Hub's. "
                "Rename or remove it first: downloads never overwrite.",
                field="file",
            )
        raise InvalidInput(
            f"{_name(f)} does not match the Hub's checksum (sha256), so it was deleted: the download "
            "was corrupted, or the file changed on the Hub. Nothing was saved in models/."
        )


def _place(part: Path, target: Path) -> None:
    """Move `part` to `target` in one step, never replacing a file that is there."""
    try:
        os.link(part, target)  # fails if target exists, atomically
    except FileExistsError:
        raise Conflict(f"{target.name} appeared in models/ during the download; it was kept.") from None
    except OSError:  # a file system without hard links
        if target.exists():
            raise Conflict(f"{target.name} appeared in models/ during the download; it was kept.") from None
        os.replace(part, target)
    else:
        part.unlink()
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_network(exc: BaseException) -> bool:
    """A lost connection or a timeout: the partial file is good, and a new start resumes it."""
    if isinstance(exc, Interrupted):
        return True
    if isinstance(exc, WriteFailed | EngineError | Cancelled) or hasattr(exc, "response"):
        return False
    module = type(exc).__module__.split(".")[0]
    return module in ("httpx", "httpx2", "httpcore") or isinstance(exc, ConnectionError | TimeoutError)


def _message(exc: BaseException, repo: str, revision: str, resumable: bool) -> str:
    if resumable:
        return f"The connection to {hub_endpoint()} was lost ({exc}). Start the download again to resume it."
    if isinstance(exc, EngineError):
        return exc.message
    if isinstance(exc, WriteFailed):
        return (
            f"Could not write the download: {exc.strerror or exc}. Is the disk full? "
            "The partial file was removed."
        )
    return hub_error(exc, repo, revision).message
