"""Remote backend: any OpenAI-compatible server (llama.cpp's llama-server, vLLM, llama_cpp.server).

The remote batches requests itself, so `serialised` is False and the engine does not hold its lock.

Sampling fields outside the OpenAI set (top_k, min_p, typical_p, repeat_penalty, mirostat, grammar) are
sent only when they differ from our defaults, so a strict OpenAI-style server works with default
params; the server's own defaults then apply (llama-server's repeat_penalty default is 1.0, ours 1.1).
A server that rejects a field answers 400, which reaches the user as a BackendError quoting it.

llama_cpp.server: start it with `--interrupt_requests False`. By default it cuts a running reply short
whenever another request arrives (even GET /v1/models), which we report as a BackendError.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import BackendError, ConfigError, EngineError, ModelUnavailable
from ..params import SamplingParams
from .base import Delta, Event, Finished, Message, Metrics, ToolCall

# llama.cpp-server sampling extras, sent only when they differ from our defaults.
_EXTRAS = {
    k: SamplingParams.model_fields[k].default
    for k in ("top_k", "min_p", "typical_p", "repeat_penalty", "grammar")
}
_PROBE_TIMEOUT = 3.0  # seconds, for health and the small metadata calls
_POLL = 0.05  # seconds between cancel checks while the remote is silent


class OpenAIBackend:
    name = "openai"
    serialised = False

    def __init__(
        self, base_url: str, api_key: str | None = None, model: str | None = None, timeout: float = 600
    ) -> None:
        url = base_url.strip().rstrip("/")
        # Accept both "http://host:8080" and "http://host:8080/v1".
        self.url = url.removesuffix("/v1")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"The backend URL '{base_url}' must start with http:// or https://.")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._ctx: int | None = None
        self._ctx_known = False  # True once the server answered (even with "unknown")
        self._can_tokenize = True

    # -- metadata -----------------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        if not self.model:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                self._models()
        return {"name": self.model or urlsplit(self.url).netloc, "backend": self.name, "url": self.url}

    def health(self) -> dict[str, Any]:
        """/health first (llama-server, vLLM: cheap, never waits for a generation), else /v1/models."""
        out: dict[str, Any] = {"ok": False, "url": self.url}
        try:
            r = self._client.get("/health", timeout=_PROBE_TIMEOUT)
            if r.status_code == 404:
                try:
                    r = self._client.get("/v1/models", timeout=1.0)
                except httpx.TimeoutException:
                    # It answered /health, so it is up: llama_cpp.server's model list waits for the
                    # running generation.
                    out.update(ok=True, busy=True)
                    return out
        except httpx.HTTPError as exc:
            out["error"] = self._unavailable(exc).message
            return out
        out["ok"] = r.is_success
        if not r.is_success:
            out["error"] = f"HTTP {r.status_code}: {_remote_message(r)}"
        return out

    def count_tokens(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> int | None:
        """Exact count from llama-server's /apply-template + /tokenize; None elsewhere."""
        if not self._can_tokenize:
            return None
        body: dict[str, Any] = {"messages": messages, **({"tools": tools} if tools else {})}
        try:
            r = self._client.post("/apply-template", json=body, timeout=_PROBE_TIMEOUT)
            if r.is_success:
                prompt = r.json()["prompt"]
                r = self._client.post("/tokenize", json={"content": prompt}, timeout=_PROBE_TIMEOUT)
            if r.is_success:
                return len(r.json()["tokens"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None  # down or odd: the stream itself will report it
        if r.status_code in (404, 405, 501):
            self._can_tokenize = False
        return None

    def context_size(self) -> int | None:
        """llama-server's per-slot n_ctx from /props, or vLLM's max_model_len; None when unknown."""
        if self._ctx_known:
            return self._ctx
        try:
            r = self._client.get("/props", timeout=_PROBE_TIMEOUT)
        except httpx.HTTPError:
            return None  # not cached: ask again once the server is up
        n: Any = None
        # A /v1/models timeout: llama_cpp.server's list waits for a running reply (and it has no n_ctx).
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
            if r.is_success:
                props = r.json()
                n = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
            else:
                n = self._models().get("max_model_len")
        self._ctx, self._ctx_known = (n if isinstance(n, int) and n > 0 else None), True
        return self._ctx

    def close(self) -> None:
        self._client.close()

    # -- generation ---------------------------------------------------------------------------

    def request_body(self, messages: list[Message], params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        if self.model:
            body["model"] = self.model
        if params.stop:
            body["stop"] = params.stop
        if params.seed != -1:
            body["seed"] = params.seed
        for key, default in _EXTRAS.items():
            if getattr(params, key) != default:
                body[key] = getattr(params, key)
        if params.mirostat_mode:
            # llama-server calls the mode "mirostat", llama_cpp.server "mirostat_mode"; each skips the other.
            body["mirostat"] = body["mirostat_mode"] = params.mirostat_mode
            body["mirostat_tau"] = params.mirostat_tau
            body["mirostat_eta"] = params.mirostat_eta
        return body

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
        """A worker thread does the HTTP; this generator polls its queue, so a cancel ends the turn
        within `_POLL` even while the remote is still queueing or evaluating the prompt. `tools` and
        `tool_choice` go to the server as they are; the `tool_calls` it returns come back as ToolCall
        events, before Finished. `label` (the chat) is not sent: the remote server keeps its own slots."""
        body = self.request_body(messages, params)
        if tools and tool_choice != "none":
            body |= {"tools": tools, "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls}
        calls: dict[int, dict[str, Any]] = {}  # index -> {"id", "name", "arguments"} as the deltas build it
        pump = _Pump(self, body)
        m = Metrics(context_size=self._ctx)  # cached; the engine asks context_size() itself
        t0 = time.perf_counter()
        t_first: float | None = None
        chunks = 0
        finish: str | None = None
        complete = False  # the remote ended the stream itself: its connection can be reused
        pump.start()
        try:
            while not cancel.is_set():
                try:
                    data = pump.lines.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if data is None or data == "[DONE]":
                    complete = True
                    break
                if isinstance(data, EngineError):
                    raise data
                chunk = _json(data)
                if "error" in chunk:
                    raise BackendError(f"The remote backend failed: {_error_text(chunk['error'])}")
                for choice in chunk.get("choices") or []:
                    _add_call_deltas(calls, choice)
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        chunks += 1
                        t_first = t_first or time.perf_counter()
                        yield Delta(text)
                    finish = choice.get("finish_reason") or finish
                _read_usage(chunk, m)
        finally:
            if not complete:  # cancel, error or an abandoned generator: the remote stops generating
                pump.stop()
        t_end = time.perf_counter()
        if cancel.is_set():
            reason = "cancelled"
        elif finish is None:
            raise BackendError(
                f"The remote backend at {self.url} ended the reply without a finish reason. "
                "(llama_cpp.server does this when another request interrupts it: "
                "start it with --interrupt_requests False.)"
            )
        else:
            reason = "length" if finish == "length" else "stop"
        m.total_ms = (t_end - t0) * 1000
        if t_first is not None:
            m.ttft_ms = (t_first - t0) * 1000
            n = m.completion_tokens if m.completion_tokens is not None else chunks
            gen_s = t_end - t_first
            m.tokens_per_s = (n - 1) / gen_s if n > 1 and gen_s > 0 else None
        if m.prompt_tokens is not None and m.completion_tokens is not None:
            m.context_used = m.prompt_tokens + m.completion_tokens
        if reason != "cancelled":
            yield from _tool_calls(calls)
        yield Finished(reason, m)

    # -- helpers ------------------------------------------------------------------------------

    def _models(self) -> dict[str, Any]:
        """The first entry of /v1/models; learns the model name. Raises httpx errors."""
        r = self._client.get("/v1/models", timeout=_PROBE_TIMEOUT)
        body = r.json() if r.is_success else None
        data = body.get("data") if isinstance(body, dict) else None
        first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        if not self.model and first.get("id"):
            self.model = str(first["id"])
        return first

    def _unavailable(self, exc: httpx.HTTPError, mid_stream: bool = False) -> ModelUnavailable:
        if isinstance(exc, httpx.TimeoutException):
            why = "timed out"
        elif isinstance(exc, httpx.ConnectError):
            why = "connection refused" if "refused" in str(exc).lower() else f"cannot connect: {exc}"
        else:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if mid_stream:
            return ModelUnavailable(f"The remote backend at {self.url} stopped answering mid-reply ({why}).")
        return ModelUnavailable(
            f"The remote backend at {self.url} is not answering ({why}). Start it or check --backend-url."
        )

    def _http_error(self, r: httpx.Response) -> EngineError:
        msg = _remote_message(r)
        if r.status_code >= 500:
            return ModelUnavailable(f"The remote backend at {self.url} failed (HTTP {r.status_code}): {msg}")
        hint = ""
        if r.status_code in (401, 403):
            hint = " Check --backend-key."
        elif r.status_code == 404:
            hint = " Is --backend-url an OpenAI-compatible server?"
        return BackendError(
            f"The remote backend at {self.url} refused the request (HTTP {r.status_code}): {msg}{hint}"
        )


class _Pump:
    """Reads one streaming response on its own thread and queues the SSE `data:` payloads, then an
    EngineError on failure, then None. `stop()` shuts the socket down, so a blocked read returns at
    once and the remote sees the disconnect."""

    def __init__(self, backend: OpenAIBackend, body: dict[str, Any]) -> None:
        self.backend, self.body = backend, body
        self.lines: queue.Queue[str | EngineError | None] = queue.Queue()
        self._stopped = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="openai-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        started = False
        try:
            with self.backend._client.stream("POST", "/v1/chat/completions", json=self.body) as r:
                if not r.is_success:
                    r.read()
                    self.lines.put(self.backend._http_error(r))
                    return
                started = True
                stream = r.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                self._sock = sock if isinstance(sock, socket.socket) else None
                if self._stopped.is_set():  # stopped before the socket was known
                    return
                for line in r.iter_lines():
                    if self._stopped.is_set():
                        return
                    if line.startswith("data:"):
                        self.lines.put(line[5:].strip())
                    elif line.startswith("error:"):  # llama-server's mid-stream error line
                        self.lines.put(BackendError(f"The remote backend failed: {line[6:].strip()[:500]}"))
                        return
        except httpx.HTTPError as exc:
            if not self._stopped.is_set():  # after stop(), a broken read is expected
                self.lines.put(self.backend._unavailable(exc, mid_stream=started))
        finally:
            self.lines.put(None)


def _add_call_deltas(calls: dict[int, dict[str, Any]], choice: dict[str, Any]) -> None:
    """OpenAI streams a call in pieces: its id and name first, then its arguments' JSON text in parts.
    A whole reply (`message`) has them complete."""
    source = choice.get("delta") or choice.get("message") or {}
    for n, part in enumerate(source.get("tool_calls") or []):
        if not isinstance(part, dict):
            continue
        index = part.get("index", n)
        call = calls.setdefault(
            index if isinstance(index, int) else n, {"id": "", "name": "", "arguments": ""}
        )
        fn = part.get("function") or {}
        call["id"] = part.get("id") or call["id"]
        call["name"] = fn.get("name") or call["name"]
        args = fn.get("arguments")
        call["arguments"] += args if isinstance(args, str) else json.dumps(args) if args else ""


def _tool_calls(calls: dict[int, dict[str, Any]]) -> Iterator[ToolCall]:
    from ..tools.parse import new_call_id

    for _, call in sorted(calls.items()):
        try:
            args = json.loads(call["arguments"]) if call["arguments"].strip() else {}
        except ValueError:
            args = {"_unparsed": call["arguments"]}
        yield ToolCall(call["id"] or new_call_id(), call["name"], args if isinstance(args, dict) else {})


def _read_usage(chunk: dict[str, Any], m: Metrics) -> None:
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        m.prompt_tokens = usage.get("prompt_tokens", m.prompt_tokens)
        m.completion_tokens = usage.get("completion_tokens", m.completion_tokens)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if isinstance(cached, int) and m.prompt_tokens is not None and m.prompt_eval_tokens is None:
            m.prompt_eval_tokens = m.prompt_tokens - cached  # vLLM / OpenAI prefix caching
    timings = chunk.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
        m.prompt_eval_tokens = timings["prompt_n"]  # llama-server: tokens actually evaluated


def _json(data: str) -> dict[str, Any]:
    try:
        out = json.loads(data)
    except ValueError:
        raise BackendError(f"The remote backend sent something that is not JSON: {data[:200]!r}") from None
    return out if isinstance(out, dict) else {}


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def _remote_message(r: httpx.Response) -> str:
    """The server's own error message: OpenAI `{"error": {"message"}}`, FastAPI `{"detail"}`, or text."""
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:500] or r.reason_phrase
    if isinstance(body, dict):
        if "error" in body:
            return _error_text(body["error"])[:500]
        if "detail" in body:
            return str(body["detail"])[:500]
    return str(body)[:500]
