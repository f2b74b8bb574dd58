"""A small Hugging Face Hub on loopback, for tests: real huggingface_hub code talks to it through HF_ENDPOINT.

It answers what huggingface_hub's model_info and file downloads ask, the way huggingface.co does:
- `GET /api/models/{repo}[/revision/{rev}]?blobs=true`: id, sha, gated, siblings with size and LFS sha256;
- `HEAD /{repo}/resolve/{rev}/{path}`: for an LFS file a 302 to a CDN link on another origin (localhost
  instead of 127.0.0.1) with X-Repo-Commit, X-Linked-Etag (the sha256) and X-Linked-Size; for a git file
  a 200 with ETag (the blob sha1) and X-Repo-Commit;
- `GET` on the resolve and CDN links, with `Range: bytes=N-` (206 and Content-Range);
- errors with X-Error-Code (RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound), as the Hub sends.
`rate` slows transfers down (bytes per second) so a test can cancel or kill one midway; `requests` records
each request (method, path, Range, whether it had a token) for assertions.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024


@dataclass
class HubFile:
    data: bytes | Path
    lfs: bool = True
    sha256: str | None = None  # what the Hub claims; None = the real one
    size: int | None = None  # what the Hub claims; None = the real one

    def real_size(self) -> int:
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)

    def claimed_size(self) -> int:
        return self.real_size() if self.size is None else self.size

    def claimed_sha256(self) -> str:
        if self.sha256 is not None:
            return self.sha256
        h = hashlib.sha256()
        if isinstance(self.data, Path):
            with open(self.data, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        else:
            h.update(self.data)
        self.sha256 = h.hexdigest()
        return self.sha256

    def blob_sha1(self) -> str:
        body = self.data.read_bytes() if isinstance(self.data, Path) else self.data
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    def read(self, start: int, end: int) -> bytes:
        if isinstance(self.data, Path):
            with open(self.data, "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return self.data[start:end]


@dataclass
class HubRepo:
    files: dict[str, HubFile]
    commit: str = ""
    token: str | None = None  # a gated repo: downloads need this token

    def __post_init__(self) -> None:
        self.commit = self.commit or hashlib.sha1(json.dumps(sorted(self.files)).encode()).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorized: bool


@dataclass
class LocalHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    rate: float | None = None  # bytes per second for file bodies; None = as fast as possible
    requests: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def cdn(self) -> str:
        assert self.server is not None
        return f"http://localhost:{self.server.server_address[1]}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="local-hub").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def ranges(self, name: str) -> list[str | None]:
        """The Range headers of the GETs of file bodies whose path ends with `name`."""
        return [r.range for r in self.requests if r.method == "GET" and r.path.endswith(name)]

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-file (a cancel, a kill) is expected here, not an error to print."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<commit>[0-9a-f]{40})/(?P<path>.+)$")


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def do_HEAD(self) -> None:
        self.route(body=False)

    def do_GET(self) -> None:
        self.route(body=True)

    def route(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        auth = self.headers.get("Authorization", "")
        self.hub.requests.append(Request(self.command, path, self.headers.get("Range"), bool(auth)))
        if m := _INFO.match(path):
            return self.info(m["repo"], m["rev"])
        if m := _RESOLVE.match(path):
            return self.resolve(m["repo"], m["rev"], m["path"], body=body)
        if m := _CDN.match(path):
            repo = self.hub.repos.get(m["repo"])
            if repo is None or repo.commit != m["commit"] or m["path"] not in repo.files:
                return self.error(404, "EntryNotFound", "Entry not found")
            return self.send_file(repo.files[m["path"]], body=body, extra={})
        self.error(404, None, "Not found")

    def repo(self, repo_id: str) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self.error(401, "RepoNotFound", "Repository not found")
        return repo

    def info(self, repo_id: str, rev: str | None) -> None:
        repo = self.repo(repo_id)
        if repo is None:
            return
        if rev not in (None, "main", repo.commit):
            return self.error(404, "RevisionNotFound", "Invalid rev id")
        siblings = []
        for name, f in sorted(repo.files.items()):
            s: dict[str, Any] = {"rfilename": name, "size": f.claimed_size(), "blobId": f.blob_sha1()}
            if f.lfs:
                s["lfs"] = {"size": f.claimed_size(), "sha256": f.claimed_sha256(), "pointerSize": 134}
                s["size"] = f.claimed_size()
            siblings.append(s)
        doc = {
            "_id": repo.commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.commit,
            "private": False,
            "gated": "manual" if repo.token else False,
            "disabled": False,
            "tags": ["gguf"],
            "siblings": siblings,
        }
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def resolve(self, repo_id: str, rev: str, path: str, *, body: bool) -> None:
        repo = self.repo(repo_id)
        if repo is None:
            return
        if rev not in ("main", repo.commit):
            return self.error(404, "RevisionNotFound", "Invalid rev id")
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            return self.error(401, "GatedRepo", "Access to this model is restricted.", commit=repo.commit)
        f = repo.files.get(path)
        if f is None:
            return self.error(404, "EntryNotFound", "Entry not found", commit=repo.commit)
        if f.lfs:  # LFS files live on the CDN: a redirect carrying the file's metadata
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn}/cdn/{repo_id}/{repo.commit}/{path}")
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{f.claimed_sha256()}"')
            self.send_header("X-Linked-Size", str(f.claimed_size()))
            self.send_header("ETag", f'"{f.blob_sha1()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_file(f, body=body, extra={"X-Repo-Commit": repo.commit, "ETag": f'"{f.blob_sha1()}"'})

    def send_file(self, f: HubFile, *, body: bool, extra: dict[str, str]) -> None:
        size = f.real_size()
        start, end = 0, size
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            start, end = int(m[1]), min(size, int(m[2]) + 1) if m[2] else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if m else 200)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if m:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return
        pos = start
        try:
            while pos < end:
                chunk = f.read(pos, min(end, pos + CHUNK))
                self.wfile.write(chunk)
                pos += len(chunk)
                if self.hub.rate:
                    time.sleep(len(chunk) / self.hub.rate)
        except (BrokenPipeError, ConnectionResetError):
            return

    def error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def tiny_gguf(path: Path, *, name: str = "tiny", file_type: int = 15, kib: int = 256, seed: int = 0) -> Path:
    """A small, valid GGUF file (a 2-block llama shape with random weights) of about `kib` KiB."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_block_count(2)
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_vocab_size(256)
    w.add_tensor("token_embd.weight", rng.standard_normal((256, 64), dtype=np.float32))
    rows = max(1, (kib * 1024 - 256 * 64 * 4) // (64 * 4) // 2)
    for i in range(2):
        w.add_tensor(f"blk.{i}.ffn_up.weight", rng.standard_normal((rows, 64), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


GATED_TOKEN = "hf_localtestTOKEN0123456789abcdef"


def standard_hub(folder: Path) -> LocalHub:
    """The test Hub's repos (not started): a typical GGUF repo, a gated one, one whose checksum lies, one
    whose file is larger than any disk, and one with a GGUF kept in git rather than LFS."""
    folder.mkdir(parents=True, exist_ok=True)
    big = tiny_gguf(folder / "big.gguf", name="tiny-big", kib=3072)
    small = tiny_gguf(folder / "small.gguf", name="tiny-small", file_type=7, kib=512, seed=1).read_bytes()
    half = len(small) // 2
    return LocalHub(
        repos={
            "me/Tiny-GGUF": HubRepo(
                files={
                    "tiny-Q4_K_M.gguf": HubFile(big),
                    "tiny-Q8_0.gguf": HubFile(small),
                    "mmproj-tiny-F16.gguf": HubFile(small[:4096]),
                    "Q2_K/tiny-Q2_K-00001-of-00002.gguf": HubFile(small[:half]),
                    "Q2_K/tiny-Q2_K-00002-of-00002.gguf": HubFile(small[half:]),
                    "README.md": HubFile(b"# Tiny\n", lfs=False),
                }
            ),
            "me/Gated-GGUF": HubRepo(files={"gated-Q8_0.gguf": HubFile(small)}, token=GATED_TOKEN),
            "me/Bad-GGUF": HubRepo(files={"bad-Q8_0.gguf": HubFile(small, sha256="0" * 64)}),
            "me/Huge-GGUF": HubRepo(files={"huge-F16.gguf": HubFile(small, size=2**50)}),
            "me/Git-GGUF": HubRepo(files={"git-Q8_0.gguf": HubFile(small[:2048], lfs=False)}),
        }
    )
