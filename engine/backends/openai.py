"""Remote backend: any OpenAI-compatible server (llama.cpp's llama-server, vLLM, llama_cpp.server).

The remote batches requests itself, so `serialised` is False and the engine does not hold its lock.
Sampling fields outside the OpenAI set (top_k, min_p, ...) are sent only when they differ from our
defaults, so a plain OpenAI-style server works with default params. A server that rejects a field
answers 400, which reaches the user as a BackendError quoting the server's message.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import BackendError, ModelUnavailable
from ..params import SamplingParams
from .base import Delta, Event, Finished, Message, Metrics

# llama.cpp-server sampling extras, sent only when they differ from our defaults.
_EXTRAS = {
    k: SamplingParams.model_fields[k].default
    for k in ("top_k", "min_p", "typical_p", "repeat_penalty", "grammar")
}
_PROBE_TIMEOUT = 3.0  # seconds, for health and the small metadata calls


class OpenAIBackend:
    name = "openai"
    serialised = False

    def __init__(
        self, base_url: str, api_key: str | None = None, model: str | None = None, timeout: float = 600
    ) -> None:
        url = base_url.strip().rstrip("/")
        # Accept both "http://host:8080" and "http://host:8080/v1".
        self.url = url[: -len("/v1")] if url.endswith("/v1") else url
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ModelUnavailable(f"The backend URL '{base_url}' must start with http:// or https://.")
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
            with contextlib.suppress(ModelUnavailable, BackendError):
                self._resolve_model()
        return {"name": self.model or urlsplit(self.url).netloc, "backend": self.name, "url": self.url}

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "url": self.url}
        try:
            r = self._client.get("/v1/models", timeout=_PROBE_TIMEOUT)
            if r.status_code == 404:  # a server without the models list
                r = self._client.get("/health", timeout=_PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            out["error"] = self._unavailable(exc).message
            return out
        out["ok"] = r.is_success
        if not r.is_success:
            out["error"] = f"HTTP {r.status_code}: {_remote_message(r)}"
        elif not self.model:
            self.model = _first_model_id(r)
        return out

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Exact count from llama-server's /apply-template + /tokenize; None elsewhere."""
        if not self._can_tokenize:
            return None
        try:
            r = self._client.post("/apply-template", json={"messages": messages}, timeout=_PROBE_TIMEOUT)
            if r.is_success:
                r = self._client.post(
                    "/tokenize", json={"content": r.json()["prompt"]}, timeout=_PROBE_TIMEOUT
                )
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
            if r.is_success:
                props = r.json()
                n = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
            else:
                models = self._client.get("/v1/models", timeout=_PROBE_TIMEOUT)
                data = (models.json().get("data") or [{}]) if models.is_success else [{}]
                n = data[0].get("max_model_len")
        except (httpx.HTTPError, ValueError, AttributeError, IndexError):
            return None  # not cached: try again once the server is up
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
            # llama-server names the mode "mirostat", llama_cpp.server "mirostat_mode"; each ignores the other.
            body["mirostat"] = body["mirostat_mode"] = params.mirostat_mode
            body["mirostat_tau"] = params.mirostat_tau
            body["mirostat_eta"] = params.mirostat_eta
        return body

    def stream(
        self, messages: list[Message], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[Event]:
        if not self.model:
            with contextlib.suppress(ModelUnavailable, BackendError):
                self._resolve_model()  # vLLM needs "model"; llama.cpp servers ignore it
        body = self.request_body(messages, params)
        m = Metrics(context_size=self._ctx)  # cached; the engine asks context_size() itself
        t0 = time.perf_counter()
        t_first: float | None = None
        chunks = 0
        finish: str | None = None
        done = threading.Event()
        try:
            with self._client.stream("POST", "/v1/chat/completions", json=body) as r:
                if not r.is_success:
                    r.read()
                    raise self._http_error(r)
                _watch_cancel(r, cancel, done)
                try:
                    for data in _sse_data(r):
                        if cancel.is_set():
                            break
                        if data == "[DONE]":
                            break
                        chunk = _json(data)
                        if "error" in chunk:
                            raise BackendError(f"The remote backend failed: {_error_text(chunk['error'])}")
                        for choice in chunk.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                chunks += 1
                                t_first = t_first or time.perf_counter()
                                yield Delta(text)
                            finish = choice.get("finish_reason") or finish
                        _read_usage(chunk, m)
                except httpx.HTTPError as exc:
                    if not cancel.is_set():  # a shut-down socket on cancel is expected
                        raise self._unavailable(exc, mid_stream=True) from None
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        finally:
            done.set()
        t_end = time.perf_counter()
        if cancel.is_set():
            reason = "cancelled"
        elif finish is None:
            raise BackendError(
                f"The remote backend at {self.url} ended the reply without a finish reason. "
                "(llama_cpp.server does this when a second request interrupts the first: "
                "start it with --interrupt_requests False.)"
            )
        else:
            reason = "length" if finish == "length" else "stop"
        m.total_ms = (t_end - t0) * 1000
        if t_first is not None:
            m.ttft_ms = (t_first - t0) * 1000
            gen_s = t_end - t_first
            n = m.completion_tokens if m.completion_tokens is not None else chunks
            m.tokens_per_s = (n - 1) / gen_s if n > 1 and gen_s > 0 else None
        if m.prompt_tokens is not None and m.completion_tokens is not None:
            m.context_used = m.prompt_tokens + m.completion_tokens
        yield Finished(reason, m)

    # -- helpers ------------------------------------------------------------------------------

    def _resolve_model(self) -> None:
        try:
            r = self._client.get("/v1/models", timeout=_PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        if r.is_success:
            self.model = _first_model_id(r)

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

    def _http_error(self, r: httpx.Response) -> Exception:
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


def _sse_data(r: httpx.Response) -> Iterator[str]:
    """The payloads of `data:` lines; comments (`: ping`) and other fields are skipped."""
    for line in r.iter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()
        elif line.startswith("error:"):  # llama-server's mid-stream error line
            raise BackendError(f"The remote backend failed: {line[6:].strip()[:500]}")


def _watch_cancel(r: httpx.Response, cancel: threading.Event, done: threading.Event) -> None:
    """On cancel, shut the socket down so a blocked read returns at once and the remote sees the
    disconnect and stops generating, even while it is still evaluating the prompt."""
    stream = r.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        return  # cancel is still checked between chunks

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.05):
                if not done.is_set():
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    threading.Thread(target=watch, name="openai-cancel", daemon=True).start()


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


def _first_model_id(r: httpx.Response) -> str | None:
    try:
        data = r.json().get("data") or []
        return str(data[0]["id"]) if data else None
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        return None
