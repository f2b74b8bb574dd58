"""The server's side of the model worker: a Backend that runs the model in a child process and supervises it.

`WorkerBackend` meets the streaming contract of backends/base.py across the process boundary. When the
worker dies (any signal or exit code) the running turn ends with a BackendError that names what happened,
the worker is restarted with backoff, and requests waiting for the model run once it is back. After
`max_crashes` crashes within `crash_window_s` it stops trying and reports why in health().

A crash while loading or warming up with weight repacking on (`model.repack: auto`) restarts the worker
once with repacking off: the "safe mode" that the Intel AMX crash needs. The outcome is remembered per
model file and CPU under the data dir.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from .. import errors
from ..config import ROOT, ModelSettings, WorkerSettings
from ..errors import BackendError, EngineError, ModelUnavailable
from ..params import SamplingParams
from .base import Cancel, Delta, Event, Finished, Message, Metrics, Reasoning
from .repack import repack_allowed
from .safe_mode import SafeModeMemory

log = logging.getLogger("engine.worker")

POLL_S = 0.005  # how often a stream looks at a cancel flag that is not a Cancel: well under one token


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Crashed(Exception):
    """The worker died before it was ready."""

    def __init__(self, exit: str, stderr: str) -> None:
        super().__init__(exit)
        self.exit, self.stderr = exit, stderr


class _Gone(BackendError):
    """The worker died (or its connection broke) before it answered a call."""


class WorkerProcess:
    """One child process, its connection, and the requests waiting on it."""

    def __init__(self, load: dict[str, Any], on_exit: Any) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.backends.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        self.pid = self.proc.pid
        self.conn = Connection(ours.detach())
        self.stderr_tail: deque[str] = deque(maxlen=12)
        self._send_lock = threading.Lock()
        self._pending: dict[int, queue.SimpleQueue[tuple[str, Any]]] = {}
        self._pending_lock = threading.Lock()
        self._next_id = 0
        self._on_exit = on_exit
        self.exit: str | None = None
        threading.Thread(target=self._pump_stderr, name=f"worker-{self.pid}-stderr", daemon=True).start()
        with contextlib.suppress(OSError):  # it died at once: wait_ready() reports how
            self.send(load)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                log.info("[worker %d] %s", self.pid, line)

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self.conn.send_bytes(orjson.dumps(message))

    def wait_ready(self) -> dict[str, Any]:
        """The worker's ready message; raises ModelUnavailable (it refused) or _Crashed (it died)."""
        try:
            message = orjson.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self.exit = describe_exit(self.proc.wait())
            time.sleep(0.05)  # let the stderr pump catch the last lines
            raise _Crashed(self.exit, "\n".join(self.stderr_tail)) from None
        if message.get("op") == "load_error":
            self.proc.wait(10)
            raise _error(message["error"])
        threading.Thread(target=self._read, name=f"worker-{self.pid}-read", daemon=True).start()
        return message

    def _read(self) -> None:
        try:
            while True:
                message = orjson.loads(self.conn.recv_bytes())
                with self._pending_lock:
                    for rid, kind, payload in message.get("items", ()):
                        q = self._pending.get(rid)
                        if q is not None:
                            q.put((kind, payload))
        except (EOFError, OSError):
            pass
        self.exit = describe_exit(self.proc.wait())
        self._on_exit(self)

    def fail_pending(self, message: str) -> None:
        with self._pending_lock:
            for q in self._pending.values():
                q.put(("crash", message))

    def open(self) -> tuple[int, queue.SimpleQueue[tuple[str, Any]]]:
        with self._pending_lock:
            self._next_id += 1
            q: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
            self._pending[self._next_id] = q
            if self.exit is not None:
                q.put(("crash", f"The model process ended ({self.exit})."))
            return self._next_id, q

    def done(self, rid: int) -> None:
        with self._pending_lock:
            self._pending.pop(rid, None)

    def call(self, op: str, timeout: float = 120, **fields: Any) -> Any:
        """A request with one reply (count, grammar, slots)."""
        rid, q = self.open()
        try:
            self.send({"op": op, "id": rid, **fields})
            kind, payload = q.get(timeout=timeout)
        except OSError:
            raise _Gone(f"The model process ended ({self.exit or 'connection lost'}).") from None
        except queue.Empty:
            raise BackendError("The model process did not answer.") from None
        finally:
            self.done(rid)
        if kind == "e":
            raise _error(payload)
        if kind == "crash":
            raise _Gone(payload)
        return payload

    def close(self, timeout: float = 15) -> None:
        """Ask the worker to stop its sequences and exit; kill it if it does not."""
        with contextlib.suppress(OSError):
            self.send({"op": "close"})
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not exit in %ss: killing it", self.pid, timeout)
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


def _error(payload: dict[str, Any]) -> EngineError:
    cls = getattr(errors, str(payload.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, EngineError)):
        cls = BackendError
    return cls(str(payload.get("message")), field=payload.get("field"))


class WorkerBackend:
    """A supervised model worker behind the Backend contract."""

    name = "llama_cpp"
    serialised = True

    def __init__(
        self,
        settings: ModelSettings,
        model_path: Path,
        *,
        gpu_required: bool = False,
        data_dir: Path | None = None,
        policy: WorkerSettings | None = None,
    ) -> None:
        self.settings = settings
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelUnavailable(
                f"Model file not found: {self.path}. Put a GGUF file in models/ and set model.path "
                "in config/model_config.yaml (or pass --model)."
            )
        self.gpu_required = gpu_required
        self.parallel = settings.parallel  # the engine lets this many turns stream at once
        self.policy = policy or WorkerSettings()
        self.memory = SafeModeMemory(data_dir)
        self.data_dir = data_dir
        self.safe_mode: str | None = None
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self.state = "starting"  # starting | ready | restarting | failed | closed
        self.failure: str | None = None
        self._crashes: deque[float] = deque()
        self._cond = threading.Condition()
        self._info: dict[str, Any] = {}
        self._n_ctx = 0
        self._good_grammars: set[str] = set()
        try:
            self._worker = self._launch()
        except _Crashed as exc:
            raise ModelUnavailable(self._crash_at_load_message(exc)) from None
        self.state = "ready"

    # --- starting and supervising ----------------------------------------------------------------

    def _repack(self) -> tuple[bool, str]:
        """Safe mode this backend already entered (a crash at load, even one it could not write down),
        else what the data dir remembers for this model and CPU, else the setting."""
        if self.settings.repack == "auto" and (known := self.safe_mode or self.memory.recall(self.path)):
            self.safe_mode = known
            return False, known
        return repack_allowed(self.settings.repack)

    def _launch(self, repack: bool | None = None) -> WorkerProcess:
        """Start a worker and wait until it has loaded the model and decoded a warm-up token. `repack`
        forces weight repacking on or off; by default the setting and safe mode decide."""
        if repack is None:
            repack, why = self._repack()
        else:
            why = f"repack forced {'on' if repack else 'off'}"
        load = {
            "op": "load",
            "model": {**self.settings.model_dump(), "repack": repack},
            "path": str(self.path),
            "gpu_required": self.gpu_required,
            "cache_dir": str(self.data_dir / "slot_cache") if self.data_dir else None,
        }
        worker = WorkerProcess(load, self._exited)
        try:
            ready = worker.wait_ready()
        except _Crashed as exc:
            if self.settings.repack == "auto" and repack:
                reason = (
                    f"the model process crashed ({exc.exit}) while loading with weight repacking on, "
                    "so it runs with repacking off (model.repack: false)"
                )
                log.warning("safe mode for %s: %s", self.path.name, reason)
                self.safe_mode = reason  # holds for this backend's restarts even if it cannot be remembered
                self.memory.remember(self.path, reason)
                return self._launch(repack=False)  # once: a crash with repacking off is a real failure
            raise
        self._info = ready["info"]
        self._n_ctx = int(ready["context_size"])
        if not repack and self.safe_mode is None and why.startswith("this CPU"):
            self.safe_mode = why
        log.info("model worker %d ready (%s, repack=%s)", worker.pid, self.path.name, repack)
        return worker

    def _crash_at_load_message(self, exc: _Crashed) -> str:
        tail = f" Its last words: {exc.stderr.splitlines()[-1]}" if exc.stderr.strip() else ""
        return (
            f"The model process crashed ({exc.exit}) while loading {self.path.name}.{tail} Try a smaller "
            "n_ctx or n_gpu_layers, model.repack: false, or another GGUF file; the log has the details."
        )

    def _exited(self, worker: WorkerProcess) -> None:
        """Called on the worker's reader thread when the process is gone."""
        with self._cond:
            if worker is not self._worker or self.state == "closed":
                return
            now = time.monotonic()
            self.last_exit = {
                "reason": worker.exit,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "pid": worker.pid,
            }
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > self.policy.crash_window_s:
                self._crashes.popleft()
            give_up = len(self._crashes) >= self.policy.max_crashes
            self.state = "failed" if give_up else "restarting"
            if give_up:
                self.failure = (
                    f"The model process crashed {len(self._crashes)} times within "
                    f"{self.policy.crash_window_s:g} s (last: {worker.exit}), so it is not restarted. "
                    "Check data/logs, try model.repack: false or a smaller n_ctx, then reload the model."
                )
            self._cond.notify_all()
        log.error("model worker %d ended (%s)%s", worker.pid, worker.exit, "" if give_up else ": restarting")
        worker.fail_pending(
            f"The model process crashed ({worker.exit}) and "
            + ("could not be restarted." if give_up else "was restarted. The reply so far was kept.")
        )
        if not give_up:
            delay = min(self.policy.max_backoff_s, 0.25 * 2 ** (len(self._crashes) - 1))
            threading.Thread(target=self._restart, args=(delay,), name="worker-restart", daemon=True).start()

    def _restart(self, delay: float) -> None:
        time.sleep(delay)
        try:
            worker = self._launch()
        except _Crashed as exc:
            with self._cond:
                self.state, self.failure = "failed", self._crash_at_load_message(exc)
                self.last_exit = {"reason": exc.exit, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
                self._cond.notify_all()
            return
        except EngineError as exc:
            with self._cond:
                self.state, self.failure = "failed", exc.message
                self._cond.notify_all()
            return
        with self._cond:
            if self.state == "closed":
                worker.close()
                return
            self._worker, self.state = worker, "ready"
            self.restarts += 1
            self._cond.notify_all()

    def _ready(
        self, cancel: threading.Event | None = None, *, dead: WorkerProcess | None = None
    ) -> WorkerProcess:
        """The live worker, waiting while it restarts; raises when it will not come back. `dead` is a worker
        seen dead: wait for its successor, though the supervisor may not have noticed the death yet."""
        with self._cond:
            while self.state in ("restarting", "starting") or (self.state, self._worker) == ("ready", dead):
                if cancel is not None and cancel.is_set():
                    break
                self._cond.wait(0.1)
            if self.state == "ready" and self._worker is not dead:
                return self._worker
            raise ModelUnavailable(self.failure or "The model process is not running.")

    def _call(self, op: str, **fields: Any) -> Any:
        """A one-reply request (count, grammar). They change nothing, so one that a crash cut off is asked
        again of the restarted worker: only the replies being generated are lost to a crash."""
        worker = self._ready()
        try:
            return worker.call(op, **fields)
        except _Gone:
            log.info("model process ended during a %r call: asking its successor", op)
        return self._ready(dead=worker).call(op, **fields)

    # --- the Backend contract ----------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        return {**self._info, "worker_pid": self._worker.pid, "safe_mode": self.safe_mode}

    def worker_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "pid": self._worker.pid if self.state == "ready" else None,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }
        if self.state == "ready":
            with contextlib.suppress(EngineError):  # it just died: the next poll shows that
                status["slots"] = self._worker.call("slots", timeout=2)
        if self.safe_mode:
            status["safe_mode"] = {"reason": self.safe_mode}
        if self.failure:
            status["reason"] = self.failure
        return status

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.state in ("ready", "restarting")}
        if self.failure:
            out["error"] = self.failure
        return out

    def context_size(self) -> int:
        return self._n_ctx

    def count_tokens(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> int:
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        return int(self._call("count", messages=messages, **extra))

    def check_grammar(self, text: str) -> None:
        """Raise InvalidInput (quoting llama.cpp's parse error) unless the worker's llama.cpp accepts it."""
        if text.strip() and text not in self._good_grammars:
            self._call("grammar", text=text)
            self._good_grammars.add(text)

    def stream(
        self,
        messages: list[Message],
        params: SamplingParams,
        cancel: threading.Event,
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] = "auto",
        parallel_tool_calls: bool = False,
        label: str | None = None,
    ) -> Iterator[Event]:
        """The worker's LlamaCppBackend.stream: `tools` are shown to the model and its calls constrained
        there (the grammar is built in the worker, the only process that imports llama_cpp). `label` names
        the chat, which the slot that serves it shows (worker.slots in /api/health)."""
        request: dict[str, Any] = {
            "op": "stream",
            "messages": messages,
            "params": params.model_dump(),
            "label": label,
        }
        if tools:
            request |= {
                "tools": tools,
                "tool_choice": tool_choice,
                "parallel_tool_calls": parallel_tool_calls,
            }
        worker, rid, q = self._start(request, cancel)
        finished = False
        # A Cancel wakes the wait below when it is set; a plain Event is looked at every POLL_S.
        wake = cancel.on_set(lambda: q.put(("c", None))) if isinstance(cancel, Cancel) else None
        poll = None if wake is not None else POLL_S
        try:
            told = False
            with wake or contextlib.nullcontext():
                while True:
                    if not told and cancel.is_set():
                        worker.send({"op": "cancel", "id": rid})
                        told = True
                    try:
                        kind, payload = q.get(timeout=poll)
                    except queue.Empty:
                        continue
                    if kind == "c":
                        continue
                    if kind == "d":
                        yield Delta(payload)
                    elif kind == "t":
                        yield Reasoning(payload)
                    elif kind == "f":
                        finished = True
                        yield Finished(payload["reason"], Metrics(**payload["metrics"]))
                        return
                    elif kind == "e":
                        finished = True
                        raise _error(payload)
                    else:  # the process died
                        finished = True
                        raise BackendError(payload)
        except OSError:
            finished = True
            raise BackendError(f"The model process ended ({worker.exit or 'connection lost'}).") from None
        finally:
            if not finished:  # the consumer went away: stop the sequence and wait until the model is free
                self._abandon(worker, rid, q)
            worker.done(rid)

    def _start(
        self, request: dict[str, Any], cancel: threading.Event
    ) -> tuple[WorkerProcess, int, queue.SimpleQueue[tuple[str, Any]]]:
        """Send a stream request to the live worker. A worker that died before the request reached it (between
        two requests, before the supervisor noticed) is waited out, and its successor gets the request."""
        dead: WorkerProcess | None = None
        for _ in range(2):
            worker = self._ready(cancel, dead=dead)
            rid, q = worker.open()
            try:
                if worker.exit is None:
                    worker.send({**request, "id": rid})
                    return worker, rid, q
            except OSError:
                pass
            worker.done(rid)
            dead = worker
        assert dead is not None
        raise BackendError(f"The model process ended ({dead.exit or 'connection lost'}).")

    def _abandon(self, worker: WorkerProcess, rid: int, q: queue.SimpleQueue[tuple[str, Any]]) -> None:
        try:
            worker.send({"op": "cancel", "id": rid})
        except OSError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                kind, _ = q.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind not in ("d", "t", "c"):
                return

    def close(self) -> None:
        with self._cond:
            self.state = "closed"
            self._cond.notify_all()
        self._worker.close()
