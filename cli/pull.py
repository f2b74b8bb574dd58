"""python -m cli --pull repo[:file]: download a model from Hugging Face with a rich progress bar, into this
machine's models/ (the engine in this process) or the server's (--url). Ctrl+C cancels and keeps nothing."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from engine import EngineError

from .render import Output

POLL_S = 0.2


class _Direct:
    """Downloads with the engine's (no model loaded), into the config's models folder."""

    def __init__(self, config: str | None) -> None:
        from engine import Runtime, load_settings

        settings, warnings = load_settings(config)
        rt = Runtime(settings, warnings=warnings, load=False)
        self.where = rt.models_dir
        self.manager = rt.models.downloads

    def start(self, ref: str, mmproj: bool) -> dict[str, Any]:
        return self.manager.start(ref, mmproj=mmproj or None).model_dump()

    def get(self, job_id: str) -> dict[str, Any]:
        return self.manager.get(job_id).model_dump()

    def cancel(self, job_id: str) -> None:
        self.manager.cancel(job_id)


class _Remote:
    """Downloads through a server's /api/models/download, into its models folder."""

    def __init__(self, url: str, api_key: str | None) -> None:
        from .remote import HttpClient

        self.client = HttpClient(url, api_key)
        self.where = f"the server at {self.client.where}"

    def start(self, ref: str, mmproj: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"repo": ref, "mmproj": mmproj or None}
        return dict(self.client._json("POST", "/api/models/download", json=body))

    def get(self, job_id: str) -> dict[str, Any]:
        return dict(self.client._json("GET", f"/api/models/downloads/{job_id}"))

    def cancel(self, job_id: str) -> None:
        self.client._json("DELETE", f"/api/models/downloads/{job_id}")


def pull(
    ref: str, out: Output, *, config: str | None = None, url: str | None = None, api_key: str | None = None,
    mmproj: bool = False,
) -> int:  # fmt: skip
    """0: the model is in models/; 1: the download failed; 2: it could not start; 130: Ctrl+C."""
    interrupted = threading.Event()  # Ctrl+C sets it: a library call in between could swallow the exception
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    except ValueError:  # not the main thread: Ctrl+C stays an exception
        previous = None
    try:
        return _pull(ref, out, config, url, api_key, mmproj, interrupted)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _pull(
    ref: str, out: Output, config: str | None, url: str | None, api_key: str | None, mmproj: bool,
    interrupted: threading.Event,
) -> int:  # fmt: skip
    try:
        source: _Direct | _Remote = _Remote(url, api_key) if url else _Direct(config)
        status = source.start(ref, mmproj)
    except EngineError as exc:
        out.error(exc.message)
        return 2
    out.info(f"{status['repo']} → {', '.join(status['files'])} ({status['bytes_total'] / 1e6:.1f} MB)")
    try:
        status = _follow(source.get, status, out, interrupted)
    except KeyboardInterrupt:
        source.cancel(status["id"])
        _wait_finished(source.get, status["id"])
        out.hint("Cancelled: the partial download was removed.")
        return 130
    except EngineError as exc:
        out.error(exc.message)
        return 1
    if status["state"] != "done":
        out.error(status.get("error") or status["state"])
        return 1
    out.success(f"Saved {status['name']} in {source.where}. Load it with --model {status['name']}.")
    return 0


def _follow(
    get: Callable[[str], dict[str, Any]], status: dict[str, Any], out: Output, interrupted: threading.Event
) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out.err, disable=not out.tty) as bar:
        task = bar.add_task(status["name"], total=status["bytes_total"], completed=status["bytes_done"])
        while status["state"] in ("downloading", "verifying"):
            if interrupted.wait(POLL_S):
                raise KeyboardInterrupt
            status = get(status["id"])
            name = status["name"] + (" (checking)" if status["state"] == "verifying" else "")
            bar.update(task, completed=status["bytes_done"], description=name)
    return status


def _wait_finished(get: Callable[[str], dict[str, Any]], job_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(job_id)["state"] not in ("downloading", "verifying"):
                return
        except EngineError:
            return
        time.sleep(POLL_S)
