"""The model worker process: `python -m engine.backends.worker FD`.

It owns llama-cpp-python and the llama.cpp context, so that a native fault (a segfault, an abort, the OOM
killer) ends this process and never the server. It talks to the server over the socket FD it inherits:
orjson messages framed by `multiprocessing.connection`.

    server -> worker   {"op": "load"}, then {"op": "stream"|"count"|"grammar"|"slots"|"cancel"|"close"}
                       (stream and count may carry "tools"; stream also "tool_choice", "parallel_tool_calls",
                       and "label", the chat it serves, which its slot shows)
    worker -> server   {"op": "ready" | "load_error"}, then {"op": "items", "items": [[id, kind, payload]]}

Item kinds: "d" a delta (answer text), "t" a piece of the thought (reasoning), "f" finished (reason,
metrics), "e" an engine error, "r" a reply to count/grammar.
Items go out in bursts (Outbox): a sender thread sends whatever the decode produced since its last send, at
most every BURST_S, with a request's consecutive pieces of text joined into one item.

Tests make it fault on purpose (real signals): LLMCHAT_FAULT="SIGNAL@STAGE" holds for every start;
the file named by LLMCHAT_FAULT_FILE holds one such line and is used up when it fires. STAGE is `load`,
`warmup`, `warmup-repack` (only while weights are repacked: the Intel AMX crash) or `token:N`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from ..config import ModelSettings
from ..errors import BackendError, EngineError
from ..params import parse_params
from .base import Delta, Event, Finished, Reasoning

log = logging.getLogger("engine.worker")

WARMUP = [{"role": "user", "content": "Hi"}]
BURST_S = 0.04  # 25 sends a second at most, whatever the decode speed and the number of sequences


def _urgent(item: list[Any], open_rids: set[int]) -> bool:
    """Whether an item goes out without waiting for the burst: all but the text after a request's first."""
    rid, kind = item[0], item[1]
    if kind in ("d", "t"):
        if rid in open_rids:
            return False
        open_rids.add(rid)
        return True
    open_rids.discard(rid)
    return True


def _coalesce(items: list[list[Any]]) -> list[list[Any]]:
    """Join each request's consecutive pieces of text of one kind; the order within a request is kept."""
    out: list[list[Any]] = []
    last: dict[int, int] = {}
    for rid, kind, payload in items:
        i = last.get(rid)
        if i is not None and kind in ("d", "t") and out[i][1] == kind:
            out[i][2] += payload
            continue
        last[rid] = len(out)
        out.append([rid, kind, payload])
    return out


def fault_for(stage: str, *, repack: bool = False) -> signal.Signals | None:
    """The signal a test asked this worker to die of at `stage`, if any (a one-shot file is used up)."""
    specs: list[tuple[str, Path | None]] = [(os.environ.get("LLMCHAT_FAULT", ""), None)]
    path = os.environ.get("LLMCHAT_FAULT_FILE")
    if path:
        with contextlib.suppress(OSError):
            specs.append((Path(path).read_text().strip(), Path(path)))
    for spec, source in specs:
        name, _, at = spec.partition("@")
        matches = at == stage or (at == "warmup-repack" and stage == "warmup" and repack)
        if matches and name.startswith("SIG"):
            if source is not None:
                source.unlink(missing_ok=True)
            return signal.Signals[name]
    return None


def token_fault() -> tuple[int, signal.Signals] | None:
    """(N, signal) when a test asked for a crash after N streamed tokens."""
    for spec in (os.environ.get("LLMCHAT_FAULT", ""), _fault_file_text()):
        name, _, at = spec.partition("@")
        if at.startswith("token:") and name.startswith("SIG"):
            return int(at.split(":", 1)[1]), signal.Signals[name]
    return None


def _fault_file_text() -> str:
    path = os.environ.get("LLMCHAT_FAULT_FILE")
    try:
        return Path(path).read_text().strip() if path else ""
    except OSError:
        return ""


def die(sig: signal.Signals) -> None:
    """Die of a real signal, as a native fault would."""
    log.warning("fault injection: dying of %s", sig.name)
    path = os.environ.get("LLMCHAT_FAULT_FILE")
    if path:
        Path(path).unlink(missing_ok=True)
    os.kill(os.getpid(), sig)  # SIGSEGV and SIGABRT keep their default action: the process dies


class Outbox:
    """The items waiting to be sent. The sender wakes for an urgent item (see _urgent) or, when it was idle,
    for the first item; text then waits for the burst, so a token costs no thread wake-up, neither here nor
    in the server and its clients (on a small CPU each wake-up takes time from the model's threads)."""

    def __init__(self) -> None:
        self._items: list[list[Any] | None] = []
        self._lock = threading.Lock()
        self._open: set[int] = set()  # requests whose first text went out
        self._waiting = threading.Event()  # something is waiting
        self._urgent = threading.Event()  # something that must not wait for the burst is waiting
        self._sending = False  # items taken and not yet sent
        self._sent = threading.Condition(self._lock)  # notified when a send ends

    def put(self, item: list[Any] | None) -> None:
        """Add an item (None: send what is left, then stop) from any thread."""
        with self._lock:
            self._items.append(item)
            urgent = item is None or _urgent(item, self._open)
        if urgent:
            self._urgent.set()
        if not self._waiting.is_set():
            self._waiting.set()

    def drain(self, timeout: float) -> None:
        """Send what is waiting now and wait until it is sent (the fault injection, before it dies)."""
        self._urgent.set()
        self._waiting.set()
        with self._sent:
            self._sent.wait_for(lambda: not self._items and not self._sending, timeout)

    def run(self, send: Callable[[list[list[Any]]], None]) -> None:
        """Send what is waiting, at most every BURST_S unless something urgent is, until None."""
        last = 0.0
        while True:
            self._waiting.wait()
            wait = last + BURST_S - time.monotonic()
            if wait > 0:
                self._urgent.wait(wait)
            self._waiting.clear()
            self._urgent.clear()
            with self._lock:
                items, self._items = self._items, []
                self._sending = True
            ready = [item for item in items if item is not None]
            try:
                if ready:
                    send(_coalesce(ready))
                    last = time.monotonic()
            finally:
                with self._sent:
                    self._sending = False
                    self._sent.notify_all()
            if len(ready) < len(items):
                return


class Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.out = Outbox()
        self.cancels: dict[int, threading.Event] = {}
        self.backend: Any = None
        self._sender = threading.Thread(target=self._send_loop, name="worker-send", daemon=True)

    def send(self, message: dict[str, Any]) -> None:
        self.conn.send_bytes(orjson.dumps(message))

    def _send_loop(self) -> None:
        """The sender thread: a first delta, a reply, an error and a finish go out at once, other text in
        bursts (see Outbox)."""
        self.out.run(lambda items: self.send({"op": "items", "items": items}))

    def load(self, request: dict[str, Any]) -> bool:
        from .llama_cpp import LlamaCppBackend

        settings = ModelSettings.model_validate(request["model"])
        repack = bool(settings.repack)
        if sig := fault_for("load", repack=repack):
            die(sig)
        try:
            cache = request.get("cache_dir")
            self.backend = LlamaCppBackend(
                settings,
                Path(request["path"]),
                gpu_required=bool(request.get("gpu_required")),
                cache_dir=Path(cache) if cache else None,
            )
            if sig := fault_for("warmup", repack=repack):
                die(sig)
            for _ in self.backend.stream(
                WARMUP, parse_params({"max_tokens": 2, "temperature": 0}), threading.Event()
            ):
                pass
        except EngineError as exc:
            self.send({"op": "load_error", "error": _error(exc)})
            return False
        info = self.backend.model_info()
        self.send(
            {"op": "ready", "info": info, "context_size": self.backend.context_size(), "pid": os.getpid()}
        )
        return True

    def serve(self) -> None:
        self._sender.start()
        try:
            self._serve()
        except _Terminate:
            log.info("SIGTERM: stopping")
        self.shutdown()

    def _serve(self) -> None:
        while True:
            try:
                message = orjson.loads(self.conn.recv_bytes())
            except (EOFError, OSError):  # the server went away
                return
            op, rid = message.get("op"), message.get("id")
            if op == "stream":
                cancel = self.cancels[rid] = threading.Event()
                threading.Thread(target=self._stream, args=(rid, message, cancel), daemon=True).start()
            elif op == "cancel":
                if rid in self.cancels:
                    self.cancels[rid].set()
            elif op == "count":
                self._reply(rid, lambda m=message: self.backend.count_tokens(m["messages"], m.get("tools")))
            elif op == "slots":
                self._reply(rid, self.backend.slots)
            elif op == "grammar":
                self._reply(rid, lambda m=message: self.backend.check_grammar(m["text"]))
            elif op == "close":
                return

    def _reply(self, rid: int, compute: Any) -> None:
        try:
            self.out.put([rid, "r", compute()])
        except EngineError as exc:
            self.out.put([rid, "e", _error(exc)])

    def _stream(self, rid: int, message: dict[str, Any], cancel: threading.Event) -> None:
        """Start a reply: its events go to the outbox from the decode thread, as they come."""
        try:
            params = parse_params(message["params"])
            tools: dict[str, Any] = {}
            if message.get("tools"):
                tools = {
                    k: message[k] for k in ("tools", "tool_choice", "parallel_tool_calls") if k in message
                }
            label = message.get("label")
            emit = self._emitter(rid)
            self.backend.submit(message["messages"], params, cancel, emit, label=label, **tools)
        except Exception as exc:
            self._failed(rid, exc)
            self.cancels.pop(rid, None)

    def _emitter(self, rid: int) -> Callable[[Event | BaseException | None], None]:
        """The decode thread's sink for one request's events: each becomes an item in the outbox."""
        fault, n = token_fault(), 0
        out = self.out

        def emit(event: Event | BaseException | None) -> None:
            nonlocal n
            if isinstance(event, Delta):
                out.put([rid, "d", event.text])
                n += 1
                if fault and n >= fault[0]:
                    out.drain(5.0)  # a crash after N *streamed* tokens: they reached the server first
                    die(fault[1])
            elif isinstance(event, Reasoning):
                out.put([rid, "t", event.text])
            elif isinstance(event, Finished):
                out.put([rid, "f", {"reason": event.finish_reason, "metrics": event.metrics.to_dict()}])
            elif isinstance(event, BaseException):
                self._failed(rid, event)
            elif event is None:
                self.cancels.pop(rid, None)

        return emit

    def _failed(self, rid: int, exc: BaseException) -> None:
        """Never leave the server waiting: the request ends with an error item."""
        if not isinstance(exc, EngineError):
            log.error("stream failed", exc_info=exc)
            exc = BackendError(f"The model failed while generating: {exc}")
        self.out.put([rid, "e", _error(exc)])

    def shutdown(self) -> None:
        """Stop every sequence within a token, let the decode thread finish, then free the model."""
        for cancel in list(self.cancels.values()):
            cancel.set()
        if self.backend is not None:
            self.backend.close()  # joins the decode thread before freeing the context
        self.out.put(None)
        self._sender.join(5)


class _Terminate(Exception):
    """SIGTERM arrived: leave the request loop and shut down in order."""


def _terminate(*_: Any) -> None:
    raise _Terminate


def _error(exc: EngineError) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": exc.message, "field": exc.field}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file in the project
    conn = Connection(int(argv[0]))
    worker = Worker(conn)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the server, which closes us in order
    try:
        request = orjson.loads(conn.recv_bytes())
        if not worker.load(request):
            return 0
    except (EOFError, OSError, _Terminate):
        return 0
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
