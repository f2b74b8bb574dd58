"""The real server for browser, fault and load tests: tests/helpers.py's ServerProcess plus a test config,
kill -9, and failure artifacts (server logs, screenshots) under test-artifacts/ (git-ignored)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import DEFAULT_MODEL as MODEL
from tests.helpers import ROOT, require
from tests.helpers import ServerProcess as _ServerProcess

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

__all__ = ["MODEL", "ROOT", "ServerProcess"]


def missing(what: str) -> None:
    """A real part is missing: fail in CI, skip elsewhere."""
    require(False, what)


def require_model() -> Path:
    if not MODEL.is_file():
        missing(f"default model missing: {MODEL}")
    return MODEL


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return CHROMIUM


def write_config(path: Path, *, max_tokens: int = 48, extra: str = "") -> Path:
    """A config for fast, reproducible tests: greedy, fixed seed, short replies, one decode thread."""
    path.write_text(
        "generation:\n"
        f"  max_tokens: {max_tokens}\n"
        "  temperature: 0\n"
        "  seed: 1\n"
        "model:\n"
        "  n_ctx: 2048\n"
        "  n_gpu_layers: 0\n" + extra
    )
    return path


def artifact_dir(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120]
    folder = ARTIFACTS / safe
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class ServerProcess(_ServerProcess):
    """tests/helpers.py's server with a config file, kill -9, and its data/logs in log_text()."""

    def __init__(
        self, data_dir: Path, *, config: Path | None = None, args: list[str] | None = None, **kw: Any
    ):
        args = list(args or [])
        if config is not None:
            args = ["--config", str(config), *args]
        super().__init__(data_dir, args=args, **kw)

    def kill9(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def full_log(self) -> str:
        parts = [self.log_text()]
        logs = self.data_dir / "logs"
        if logs.is_dir():
            for f in sorted(logs.glob("*.log")):
                parts.append(f"==> {f.name} <==\n" + f.read_text(errors="replace"))
        return "\n".join(parts)

    def save_log(self, folder: Path, name: str = "server.log") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if self.proc is not None and self.proc.poll() is None:  # a hang: every thread's stack into the log
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(0.5)
        out = folder / name
        out.write_text(self.full_log())
        return out


def start_server(base: Path, *, max_tokens: int = 48, extra_config: str = "", **kw: Any) -> ServerProcess:
    """A started server with its data dir and config under `base`."""
    require_model()
    base.mkdir(parents=True, exist_ok=True)
    cfg = write_config(base / "config.yaml", max_tokens=max_tokens, extra=extra_config)
    return ServerProcess(base / "data", config=cfg, log_path=base / "server.log", **kw).start()


@contextlib.contextmanager
def artifacts_on_failure(name: str, *servers: ServerProcess) -> Iterator[None]:
    """Run the block; on an exception, save the servers' logs in test-artifacts/<name>/ and say where."""
    try:
        yield
    except BaseException as exc:
        folder = artifact_dir(name)
        for i, s in enumerate(servers):
            s.save_log(folder / f"server{i}")
        note = f"[artifacts] server logs saved in {folder}"
        print(f"\n{note}", file=sys.stderr)
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{exc}\n{note}") from exc
        raise


def sse_events(response: httpx.Response) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Parse a streaming text/event-stream response into (event name, data) as lines arrive."""
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


def ui_send(client: Any, text: str, session_id: str | None, *, submit: bool = False) -> Any:
    """Call the chat tab's send handler through gradio_client (the UI's own event path): the message, the
    session id (the page's BrowserState) and "Custom" as the character; any other input gets its default.
    Returns the Job when `submit`, else the final outputs (chatbot, session id, status)."""
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/on_send"]
    given = {"text": text, "session_id": session_id, "char": "__custom__"}
    kwargs = {p["parameter_name"]: given.get(p["parameter_name"]) for p in info["parameters"]}
    if submit:
        return client.submit(**kwargs, api_name="/on_send")
    return client.predict(**kwargs, api_name="/on_send")
