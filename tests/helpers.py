"""Test helpers: ServerProcess runs the real `python -m webui`; small checks shared by test modules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# One decode thread: on a busy 2-core machine llama.cpp's spinning worker threads make generation many
# times slower when the test process and the server compete for the cores.
# One sequence at a time unless a test asks for more (tests/test_slots.py): greedy replies are equal only
# from the same batch composition, and many tests compare two replies or expect a natural stop.
TEST_ENV = {"LLM_MODEL__N_THREADS": "1", "LLM_MODEL__PARALLEL": "1"}

# Greedy, reproducible sampling for every real-model test.
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 42}

TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "site-packages")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m webui` on a free loopback port, with its own data dir and a log file.

    start() waits until GET /api/health answers 200; stop() always ends the process (terminate, then kill).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        model: Path | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.model = model
        self.args = list(args)
        self.env = {**os.environ, **TEST_ENV, **(env or {})}
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "webui", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.host != "127.0.0.1":
            cmd += ["--host", self.host]
        if self.model is not None:
            cmd += ["--model", str(self.model)]
        return cmd + self.args

    def start(self, timeout: float = 180.0) -> ServerProcess:
        for attempt in range(3):  # a port picked by free_port() can be taken before the server binds it
            self.port = free_port()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== {' '.join(self.command())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_healthy(timeout):
                return self
            in_use = "address already in use" in self.log_text().lower()
            self.stop()
            if not in_use or attempt == 2:
                break
        raise RuntimeError(f"server did not become healthy; log {self.log_path}:\n{self.log_text()[-4000:]}")

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/api/health", timeout=5).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_fixture(
    tmp_path_factory: Any, name: str, model: Path, args: Sequence[str] = (), **kwargs: Any
) -> Iterator[ServerProcess]:
    """Body of a module-scoped server fixture: start, yield, always stop."""
    base = tmp_path_factory.mktemp(name)
    server = ServerProcess(base / "data", model=model, args=args, log_path=base / "server.log", **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def assert_no_traceback(text: str) -> None:
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, f"response leaks internals ({marker!r}): {text[:500]}"


def assert_error(resp: httpx.Response, status: int, *names: str) -> dict[str, Any]:
    """`resp` is a JSON error {"error": {"type", "message"}} with `status` whose message names `names`."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers["content-type"]
    assert_no_traceback(resp.text)
    err = resp.json()["error"]
    assert isinstance(err["type"], str) and err["type"]
    assert isinstance(err["message"], str) and err["message"]
    for name in names:
        assert name in err["message"] or name == err.get("field") or name == err.get("param"), (name, err)
    return dict(err)


def parse_sse(raw: str) -> list[tuple[str, Any]]:
    """Server-sent events as (event name, parsed data); the name is "message" unless `event:` says."""
    events: list[tuple[str, Any]] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            else:
                raise AssertionError(f"unexpected SSE line {line!r} in {block!r}")
        text = "\n".join(data)
        events.append((name, text if text == "[DONE]" else json.loads(text)))
    return events


LONG_STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def give_up_on_whole_reply(
    url: str, route: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """Ask for a long non-streamed reply and hang up after a moment, as a client with a short timeout does."""
    try:
        resp = httpx.post(url + route, json=payload, headers=headers, timeout=httpx.Timeout(60, read=1.0))
    except httpx.ReadTimeout:
        return
    raise AssertionError(f"the reply came back within the timeout: {resp.status_code} {resp.text[:200]}")


def queue_ms_of_next_request(url: str, headers: dict[str, str] | None = None) -> float:
    """How long a small request waits for the model: near 0 once an abandoned request has let it go."""
    payload = {"messages": [{"role": "user", "content": "Hi"}], "params": {"max_tokens": 1}}
    resp = httpx.post(url + "/api/chat", json=payload, headers=headers, timeout=120)
    assert resp.status_code == 200, resp.text
    return float(resp.json()["metrics"]["queue_ms"])


def is_ci() -> bool:
    """Any true CI value (CI=true, 1, yes, on): a real part that is missing fails the run, never skips."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: a real part that is missing must never turn a CI run green."""
    if condition:
        return
    import pytest

    if is_ci():
        pytest.fail(f"{why} (CI=true: a missing part fails the run; `make setup` installs it)", pytrace=False)
    pytest.skip(why)
