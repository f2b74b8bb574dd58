"""Servers under test, each a subprocess on a free loopback port: ours, llama-cpp-python's, llama.cpp's."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from engine.backends.repack import repack_allowed
from engine.config import ModelSettings

from . import cpp_server, machine

ROOT = Path(__file__).resolve().parent.parent
# every implementation gets our shipped setting (llama.cpp's own default turns it on too)
FLASH_ATTN: bool = ModelSettings.model_fields["flash_attn"].default
# and the same weight repacking as ours (auto: off on Intel AMX, where llama.cpp's repacking crashes, in
# llama-cpp-python and llama-server alike; the baselines would die on their first prompt)
REPACK, REPACK_WHY = repack_allowed(ModelSettings.model_fields["repack"].default)


def cache_dir() -> Path:
    base = os.environ.get("LLMCHAT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmchat"
    )
    return Path(base)


def native_binary() -> Path | None:
    """The llama-server that `make bench-native` built for the installed llama-cpp-python, if any."""
    ver = machine.version("llama_cpp_python")
    exe = cache_dir() / f"llama-server-{ver}" / "llama-server"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


@dataclass
class ServerProcess:
    """Start a server, poll its health URL until 200, and always stop it."""

    name: str
    cmd: list[str]
    port: int
    health: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> ServerProcess:
        fd, log = tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".log")
        self.log_path = Path(log)
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, stdout=fd, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        os.close(fd)
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() - started < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    if client.get(self.url + self.health).status_code == 200:
                        self.startup_s = time.perf_counter() - started
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer {self.health} within {timeout:.0f}s: {self.log_tail()}"
        )

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:] if self.log_path else ""
        except OSError:
            return ""

    def rss_mb(self) -> float | None:
        """RSS of the server and its children (ours runs the model in a worker process)."""
        sizes = [machine.proc_status_mb(p, "VmRSS") for p in machine.tree_pids(self.pid)]
        known = [m for m in sizes if m is not None]
        return round(sum(known), 1) if known else None

    def cpu_s(self) -> float:
        return machine.cpu_seconds(self.pid)

    def loop_cpu_s(self) -> float:
        """CPU time of the main thread: the event loop, where the HTTP and Gradio work happens."""
        return machine.thread_cpu_seconds(self.pid, self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Setup:
    """What every implementation gets: same model, threads, context, batch and flash attention."""

    model: Path
    threads: int
    n_ctx: int = 4096
    n_batch: int = 512
    flash_attn: bool = FLASH_ATTN
    repack: bool = REPACK


def ours(setup: Setup, data_dir: Path, parallel: int | None = None, *, split: bool = False) -> ServerProcess:
    """Our server; `parallel` None keeps the shipped default (model.parallel, 4 sequences). `split`: a KV
    cache per slot (model.kv_unified false) of n_ctx / parallel cells, llama-server -np's layout."""
    port = machine.free_port()
    cmd = [sys.executable, "-m", "webui", "--port", str(port), "--data-dir", str(data_dir)]
    cmd += ["--model", str(setup.model)]
    env = {
        "LLM_MODEL__N_THREADS": str(setup.threads),
        "LLM_MODEL__N_CTX": str(setup.n_ctx),
        "LLM_MODEL__N_BATCH": str(setup.n_batch),
        "LLM_MODEL__FLASH_ATTN": str(setup.flash_attn).lower(),
        "LLM_MODEL__REPACK": str(setup.repack).lower(),
        "LLM_LOGGING__LEVEL": "WARNING",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    if parallel is not None:
        env["LLM_MODEL__PARALLEL"] = str(parallel)
    if split and parallel:
        env["LLM_MODEL__KV_UNIFIED"] = "false"
        env["LLM_MODEL__N_CTX"] = str(max(256, setup.n_ctx // parallel))
    return ServerProcess(OURS_SPLIT if split else "ours", cmd, port, "/api/health", env)


OURS_SPLIT = "ours kv_unified: false"


def peer(setup: Setup) -> ServerProcess:
    port = machine.free_port()
    t = str(setup.threads)
    cmd = [*cpp_server.command(setup.repack), "--model", str(setup.model), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_threads", t, "--n_threads_batch", t, "--n_ctx", str(setup.n_ctx)]
    cmd += ["--n_batch", str(setup.n_batch), "--n_ubatch", str(setup.n_batch)]
    cmd += ["--flash_attn", str(setup.flash_attn).lower()]
    cmd += ["--verbose", "false"]
    return ServerProcess("llama_cpp.server", cmd, port, "/v1/models")


def native(setup: Setup, exe: Path, parallel: int = 1, *, unified: bool = False) -> ServerProcess:
    """llama.cpp's llama-server. With `-np` above 1 it splits the KV cache into a stream per slot of
    n_ctx / np cells; `unified` shares the n_ctx cells among the slots instead (--kv-unified, what it does
    itself without -np), as ours does: any chat may use the whole context."""
    port = machine.free_port()
    t = str(setup.threads)
    cmd = [str(exe), "-m", str(setup.model), "--host", "127.0.0.1", "--port", str(port), "-t", t, "-tb", t]
    cmd += ["-c", str(setup.n_ctx), "-b", str(setup.n_batch), "-ub", str(setup.n_batch), "-np", str(parallel)]
    cmd += ["-fa", "on" if setup.flash_attn else "off", "--no-webui", "--log-disable"]
    if not setup.repack:
        cmd.append("--no-repack")
    if unified:
        cmd.append("--kv-unified")
    return ServerProcess(UNIFIED if unified else "llama-server", cmd, port, "/health")


UNIFIED = "llama-server --kv-unified"
