"""Start the real server (python -m webui) on a free loopback port, poll /api/health, always stop it.

Shared by the browser tests and tests/test_faults.py / tests/test_load.py. Failure artifacts (screenshots,
server logs) go to test-artifacts/ (git-ignored); their folder is named in the failure message.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PYTHON = ROOT / ".venv" / "bin" / "python"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(what: str) -> None:
    """A real part is missing: fail in CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: this is a failure, not a skip)")
    pytest.skip(what)


def require_model() -> Path:
    if not MODEL.is_file():
        missing(f"default model missing: {MODEL} (make setup installs it)")
    return MODEL


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, *, max_tokens: int = 48, extra: str = "") -> Path:
    """A config for fast, reproducible tests: greedy, fixed seed, short replies."""
    path.write_text(
        "generation:\n"
        f"  max_tokens: {max_tokens}\n"
        "  temperature: 0\n"
        "  seed: 1\n"
        "model:\n"
        "  n_ctx: 2048\n"
        "  n_gpu_layers: 0\n"
        "  n_threads: 1\n" + extra
    )
    return path


def artifact_dir(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]
    folder = ARTIFACTS / safe
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class ServerProcess:
    """`python -m webui` in a subprocess. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config: Path | None = None,
        model: Path | str | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.model = model
        self.extra_args = list(extra_args or [])
        self.env = env or {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"server-{self.data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def command(self) -> list[str]:
        python = str(PYTHON if PYTHON.exists() else sys.executable)
        cmd = [python, "-m", "webui", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.config:
            cmd += ["--config", str(self.config)]
        if self.model:
            cmd += ["--model", str(self.model)]
        return cmd + self.extra_args

    def start(self, timeout: float = 180.0) -> ServerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer /api/health in {timeout:.0f} s:\n{self.log_tail()}")

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self._log:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        parts = []
        if self.log_path.exists():
            parts.append(self.log_path.read_text(errors="replace"))
        logs = self.data_dir / "logs"
        if logs.is_dir():
            for f in sorted(logs.glob("*.log")):
                parts.append(f"==> {f.name} <==\n" + f.read_text(errors="replace"))
        return "\n".join(parts)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_text()[-n:]

    def save_log(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / "server.log"
        out.write_text(self.log_text())
        return out

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 120), **kw)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def server_or_artifacts(server: ServerProcess, name: str) -> Iterator[ServerProcess]:
    """Run the block; on an exception, copy the server log to test-artifacts/<name>/ and say where."""
    try:
        yield server
    except BaseException:
        folder = artifact_dir(name)
        server.save_log(folder)
        print(f"\n[artifacts] server log saved in {folder}", file=sys.stderr)
        raise


def sse_events(response: httpx.Response) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Parse a text/event-stream response into (event name, data dict)."""
    import json

    event: str | None = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            yield event, json.loads(payload)
            event = None


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
