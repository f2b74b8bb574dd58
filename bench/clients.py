"""One streamed reply per call, timed by the client: TTFT, decode tokens/s, token counts.

Every path is timed the same way: TTFT is request start -> first non-empty text; decode tokens/s is
(tokens after the first piece) / (last text - first text), where `tokens` is what the implementation says
it generated.
"""

from __future__ import annotations

import codecs
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

Message = dict[str, str]


@dataclass
class Sample:
    ttft_ms: float | None = None
    decode_tok_s: float | None = None
    tokens: int | None = None
    total_ms: float | None = None
    finish: str | None = None
    prompt_tokens: int | None = None
    prompt_eval_tokens: int | None = None
    queue_ms: float | None = None
    updates: int | None = None
    updates_per_s: float | None = None
    session_id: str | None = None
    model_ttft_ms: float | None = None  # the model's own TTFT (its metrics: from its start on the prompt)
    noise: float | None = None  # share of the machine other processes used meanwhile
    attempts: int | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("text")
        return {k: v for k, v in d.items() if v is not None}


class Clock:
    """Arrival times of the first and last piece of text."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first = self.last = 0.0
        self.chunks = 0
        self.parts: list[str] = []

    def text(self, piece: str | None) -> None:
        if piece:
            now = time.perf_counter()
            if not self.first:
                self.first = now
            self.last = now
            self.chunks += 1
            self.parts.append(piece)

    def _first_tokens(self, tokens: int) -> float:
        """Tokens in the first piece: one per piece when each token came alone, else (a coalesced UI
        update) its share of the characters, so a late first update cannot inflate the decode rate."""
        if self.chunks >= tokens:
            return 1.0
        total = sum(len(p) for p in self.parts)
        return max(1.0, tokens * len(self.parts[0]) / total) if total else 1.0

    def sample(self, tokens: int | None, **kw: Any) -> Sample:
        end = time.perf_counter()
        s = Sample(
            tokens=tokens, total_ms=round((end - self.start) * 1000, 1), text="".join(self.parts), **kw
        )
        if self.first:
            s.ttft_ms = round((self.first - self.start) * 1000, 1)
            if tokens and tokens > 1 and self.last > self.first:
                s.decode_tok_s = round((tokens - self._first_tokens(tokens)) / (self.last - self.first), 2)
        return s


def llama_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    """Our SamplingParams names -> Llama.create_chat_completion's."""
    keys = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "max_tokens")
    return {k: p[k] for k in keys if k in p}


# --- in-process --------------------------------------------------------------------------------------


def raw_chat(llm: Any, messages: list[Message], p: dict[str, Any]) -> Sample:
    """llama-cpp-python's own streaming chat completion."""
    clock = Clock()
    finish = None
    for chunk in llm.create_chat_completion(messages=messages, stream=True, **llama_kwargs(p)):
        choice = chunk["choices"][0]
        clock.text(choice["delta"].get("content"))
        finish = choice.get("finish_reason") or finish
    tokens = p["max_tokens"] if finish == "length" else clock.chunks
    return clock.sample(tokens, finish=finish)


def raw_generate(llm: Any, formatter: Any, messages: list[Message], p: dict[str, Any]) -> Sample:
    """The lower-level loop: template -> tokenize -> Llama.generate -> detokenize each token."""
    import llama_cpp

    clock = Clock()
    result = formatter(messages=messages)
    tokens = llm.tokenize(
        result.prompt.encode(), add_bos=not getattr(result, "added_special", False), special=True
    )
    llm.set_seed(p["seed"])
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    vocab, n, finish = llm._model.vocab, 0, "length"
    gen = llm.generate(
        tokens,
        temp=p["temperature"],
        top_k=p["top_k"],
        top_p=p["top_p"],
        min_p=p["min_p"],
        repeat_penalty=p["repeat_penalty"],
    )
    for tok in gen:
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            finish = "stop"
            break
        n += 1
        clock.text(decoder.decode(llm.detokenize([tok])))
        if n >= p["max_tokens"]:
            break
    gen.close()
    return clock.sample(n, finish=finish, prompt_tokens=len(tokens))


def engine_stream(engine: Any, messages: list[Message], p: dict[str, Any]) -> Sample:
    """Our Engine.stream in this process: the path every interface shares."""
    from engine import Delta, Finished
    from engine.params import parse_params

    params = parse_params(p)
    clock = Clock()
    done = None
    for event in engine.stream(messages, params):
        if isinstance(event, Delta):
            clock.text(event.text)
        elif isinstance(event, Finished):
            done = event
    m = done.metrics if done else None
    return clock.sample(
        m.completion_tokens if m else None,
        finish=done.finish_reason if done else None,
        prompt_tokens=m.prompt_tokens if m else None,
        prompt_eval_tokens=m.prompt_eval_tokens if m else None,
        queue_ms=m.queue_ms if m else None,
        model_ttft_ms=m.ttft_ms if m else None,
    )


# --- over HTTP ---------------------------------------------------------------------------------------


def _events(response: httpx.Response) -> Any:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[6:]


def sse(
    client: httpx.Client, url: str, messages: list[Message], p: dict[str, Any], session_id: str | None = None
) -> Sample:
    """Our /api/chat/stream."""
    body: dict[str, Any] = {"messages": messages, "params": p}
    if session_id:
        body["session_id"] = session_id
    clock = Clock()
    done: dict[str, Any] = {}
    with client.stream("POST", url + "/api/chat/stream", json=body) as r:
        r.raise_for_status()
        for data in _events(r):
            event = orjson.loads(data)
            if "delta" in event:
                clock.text(event["delta"])
            elif event.get("done"):
                done = event
            elif "error" in event:
                raise RuntimeError(f"/api/chat/stream: {event['error']}")
    m = done.get("metrics") or {}
    return clock.sample(
        m.get("completion_tokens"),
        finish=done.get("finish_reason"),
        prompt_tokens=m.get("prompt_tokens"),
        prompt_eval_tokens=m.get("prompt_eval_tokens"),
        queue_ms=m.get("queue_ms"),
        session_id=done.get("session_id"),
        model_ttft_ms=m.get("ttft_ms"),
    )


def openai(client: httpx.Client, url: str, messages: list[Message], p: dict[str, Any]) -> Sample:
    """Any OpenAI-compatible /v1/chat/completions, streaming, with usage in the last chunk."""
    body = {
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **llama_kwargs(p),
    }
    clock = Clock()
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    finish = None
    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for data in _events(r):
            if data == "[DONE]":
                break
            chunk = orjson.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"/v1/chat/completions: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                clock.text((choice.get("delta") or {}).get("content"))
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
    tokens = usage.get("completion_tokens") or timings.get("predicted_n")
    if tokens is None:
        tokens = p["max_tokens"] if finish == "length" else clock.chunks
    return clock.sample(
        tokens,
        finish=finish,
        prompt_tokens=usage.get("prompt_tokens"),
        prompt_eval_tokens=timings.get("prompt_n"),
    )


SEND_API_NAMES = ("/chat_send", "/on_send")  # a stable name first, then Gradio's default for on_send


@dataclass
class SendEvent:
    """The chat tab's send event: its id in the page config and its parameter names, and the session
    hash of the page that sends it (a browser keeps one per page load, and Gradio sets up a session's
    component state on its first event: tens of ms that a reply from an open page does not wait for)."""

    fn_index: int
    names: list[str]
    session_output: int  # which output is the session id (the page's BrowserState)
    session_hash: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def find_send_event(url: str, http: httpx.Client) -> SendEvent:
    """The event that takes (text, session_id, ...), found by its parameter names, as the page knows it."""
    from gradio_client import Client

    endpoints = Client(url + "/", verbose=False).view_api(return_format="dict", print_info=False)
    named = endpoints["named_endpoints"]
    names = [n for n in SEND_API_NAMES if n in named] + [n for n in named if n not in SEND_API_NAMES]
    config = http.get(url + "/config").json()
    kinds = {c["id"]: c.get("type") for c in config["components"]}
    deps = {"/" + str(d.get("api_name")): d for d in config["dependencies"]}
    for name in names:
        params = [str(p["parameter_name"]) for p in named[name]["parameters"]]
        if params[:2] == ["text", "session_id"] and name in deps:
            outputs = [kinds.get(i) for i in deps[name]["outputs"]]
            return SendEvent(deps[name]["id"], params, outputs.index("browserstate"))
    raise RuntimeError(
        "no Gradio endpoint takes (text, session_id, ...): has the chat tab's send event moved?"
    )


def gradio(send: SendEvent, http: httpx.Client, url: str, text: str, session_id: str | None) -> Sample:
    """The browser's path: the chat tab's send event over Gradio's queue protocol, as the page's own
    client speaks it (join, then the SSE stream of updates and diffs); tokens from the saved session.

    Not gradio_client: it polls its message queue every 50 ms (utils.stream_sse_v1plus), which delays
    and bunches updates, so it would measure itself rather than the server."""
    from gradio_client.utils import apply_diff

    clock = Clock()
    updates, shown = 0, ""
    out: list[Any] | None = None
    known = {"text": text, "session_id": session_id, "char": "__custom__", "lang_value": "en"}
    session_hash = send.session_hash
    body = {
        "data": [known.get(n) for n in send.names],
        "fn_index": send.fn_index,
        "session_hash": session_hash,
        "event_data": None,
        "trigger_id": None,
    }
    http.post(f"{url}/gradio_api/queue/join", json=body).raise_for_status()
    with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session_hash}) as r:
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = orjson.loads(line[5:])
            kind = msg.get("msg")
            if kind == "process_completed":
                if not msg.get("success", True):
                    raise RuntimeError(f"the Gradio event failed: {msg.get('output')}")
                if (msg.get("output") or {}).get("data"):
                    out = msg["output"]["data"]
                break
            if kind != "process_generating":
                continue
            data = msg["output"]["data"]
            out = data if out is None else [apply_diff(o, d) for o, d in zip(out, data, strict=True)]
            updates += 1
            chat = out[0] or []
            last = chat[-1] if chat else None
            if last and last.get("role") == "assistant":
                content = last.get("content")
                if isinstance(content, list):
                    content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
                content = content or ""
                if len(content) > len(shown):
                    clock.text(content[len(shown) :])
                    shown = content
    sid = out[send.session_output] if out else None
    metrics: dict[str, Any] = {}
    if sid:
        doc = orjson.loads(http.get(f"{url}/api/sessions/{sid}").content)
        last_msg = doc["messages"][-1]
        metrics = last_msg.get("metrics") or {}
    s = clock.sample(
        metrics.get("completion_tokens"),
        finish=metrics.get("finish_reason"),
        prompt_tokens=metrics.get("prompt_tokens"),
        prompt_eval_tokens=metrics.get("prompt_eval_tokens"),
        queue_ms=metrics.get("queue_ms"),
        session_id=sid,
    )
    s.updates = updates
    if clock.chunks > 1 and clock.last > clock.first:
        s.updates_per_s = round((clock.chunks - 1) / (clock.last - clock.first), 1)
    return s
