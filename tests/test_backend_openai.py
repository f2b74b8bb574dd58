"""The remote backend against a real OpenAI-compatible server: llama-cpp-python's own llama_cpp.server
with the default SmolLM2, plus a tiny stdlib server for the error shapes a real one rarely gives."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bench import cpp_server
from bench.servers import REPACK
from engine.backends.base import Delta, Event, Finished
from engine.backends.openai import OpenAIBackend
from engine.errors import BackendError, ModelUnavailable
from engine.params import SamplingParams
from tests.helpers import require

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY = SamplingParams(temperature=0.0, seed=42, max_tokens=48)
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require(MODEL.exists(), f"{MODEL} is missing (make setup installs it)")
    port = free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    # --interrupt_requests False: otherwise a second request cuts the running reply short. bench.cpp_server
    # is llama_cpp.server with weight repacking as ours (off on Intel AMX, where the first prompt crashes it)
    cmd = [*cpp_server.command(REPACK), "--model", str(MODEL), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "2048", "--interrupt_requests", "False"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer in 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def backend(server_url: str) -> Iterator[OpenAIBackend]:
    b = OpenAIBackend(server_url)
    yield b
    b.close()


def run(
    b: OpenAIBackend, params: SamplingParams, messages: list[dict[str, str]] | None = None
) -> list[Event]:
    return list(b.stream(messages or STORY, params, threading.Event()))


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


def test_stream_yields_deltas_then_one_finished(backend: OpenAIBackend) -> None:
    events = run(backend, GREEDY)
    *deltas, last = events
    assert len(deltas) >= 10 and all(isinstance(e, Delta) for e in deltas)
    assert isinstance(last, Finished) and last.finish_reason in ("stop", "length")
    m = last.metrics
    assert m.ttft_ms is not None and m.ttft_ms > 0
    assert m.tokens_per_s is not None and m.tokens_per_s > 0
    assert m.total_ms is not None and m.total_ms >= m.ttft_ms
    # llama_cpp.server reports neither usage nor timings in a stream: unknown, never 0.
    assert m.prompt_eval_tokens is None
    assert m.completion_tokens is None or m.completion_tokens > 0


def test_metadata(backend: OpenAIBackend, server_url: str) -> None:
    assert backend.health() == {"ok": True, "url": server_url}
    info = backend.model_info()
    assert info["backend"] == "openai" and info["url"] == server_url
    assert info["name"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # learnt from /v1/models
    assert backend.context_size() is None  # llama_cpp.server has no /props
    assert backend.count_tokens(STORY) is None  # nor /tokenize for chat messages
    assert not backend.serialised


def test_base_url_with_v1_suffix(server_url: str) -> None:
    b = OpenAIBackend(server_url + "/v1/")
    assert b.url == server_url and b.health()["ok"]


def test_temperature_zero_and_seed_repeat(backend: OpenAIBackend) -> None:
    first, second = text_of(run(backend, GREEDY)), text_of(run(backend, GREEDY))
    assert first and first == second


def test_cancel_mid_stream_ends_quickly(backend: OpenAIBackend) -> None:
    cancel = threading.Event()
    deltas, cancelled_at = 0, 0.0
    last: Event | None = None
    # Greedy, this reply runs about 600 tokens; it is cancelled after 10.
    for ev in backend.stream(STORY, SamplingParams(temperature=0.0, seed=42, max_tokens=1000), cancel):
        last = ev
        if isinstance(ev, Delta):
            deltas += 1
            if deltas == 10:
                cancel.set()
                cancelled_at = time.perf_counter()
    assert isinstance(last, Finished) and last.finish_reason == "cancelled"
    assert time.perf_counter() - cancelled_at < 1.0
    assert deltas == 10
    rate = last.metrics.tokens_per_s
    assert rate is not None and rate > 0
    # The remote stopped too: the next request starts well before the ~590 tokens left could have been
    # generated (the bound scales with this machine's speed, measured above).
    done = run(backend, SamplingParams(temperature=0.0, max_tokens=4))
    assert isinstance(done[-1], Finished) and done[-1].finish_reason in ("stop", "length")
    ttft_ms = done[-1].metrics.ttft_ms
    assert ttft_ms is not None and ttft_ms / 1000 < 0.5 * 400 / rate


def test_cancel_while_queued_behind_another_request(backend: OpenAIBackend) -> None:
    """llama_cpp.server runs one request at a time; a queued request is cancelled without waiting."""
    long_cancel = threading.Event()
    long_events: list[Event] = []
    worker = threading.Thread(
        target=lambda: long_events.extend(backend.stream(STORY, SamplingParams(max_tokens=1000), long_cancel))
    )
    worker.start()
    try:
        time.sleep(0.5)  # the long reply is generating now
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        t0 = time.perf_counter()
        events = list(backend.stream(STORY, GREEDY, cancel))
        assert time.perf_counter() - t0 < 2.0
        assert isinstance(events[-1], Finished) and events[-1].finish_reason == "cancelled"
        assert worker.is_alive()  # it really was queued behind the long reply
    finally:
        long_cancel.set()
        worker.join(timeout=10)
    assert isinstance(long_events[-1], Finished) and long_events[-1].finish_reason == "cancelled"


def test_outage_is_model_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    b = OpenAIBackend(url, timeout=5)
    h = b.health()
    assert h["ok"] is False and h["url"] == url and url in h["error"]
    with pytest.raises(ModelUnavailable) as err:
        run(b, GREEDY)
    assert url in err.value.message and "--backend-url" in err.value.message
    assert b.context_size() is None and b.count_tokens(STORY) is None
    assert b.model_info() == {"name": url.removeprefix("http://"), "backend": "openai", "url": url}


# -- error shapes, from a stdlib server ------------------------------------------------------------


class _Fake(BaseHTTPRequestHandler):
    """POST /v1/chat/completions answers according to the first message's content."""

    bodies: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Fake.bodies.append(body)
        mode = body["messages"][0]["content"]
        if mode in ("400", "503"):
            msg = "Unrecognized request argument supplied: top_k" if mode == "400" else "Loading model"
            self._send(int(mode), "application/json", json.dumps({"error": {"message": msg}}).encode())
        elif mode == "truncated":  # a stream cut short: no finish_reason, no [DONE]
            self._send(200, "text/event-stream", b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n')
        else:  # a llama-server-like stream with usage and timings
            chunks = [
                {"choices": [{"delta": {"content": "Hello"}, "finish_reason": None}]},
                {"choices": [{"delta": {}, "finish_reason": "stop"}]},
                {
                    "choices": [],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 1},
                    "timings": {"prompt_n": 3},
                },
            ]
            sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            self._send(200, "text/event-stream", sse.encode())

    def _send(self, status: int, ctype: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIBackend]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    b = OpenAIBackend(f"http://127.0.0.1:{srv.server_address[1]}", api_key="k", model="m")
    yield b
    b.close()
    srv.shutdown()


def say(b: OpenAIBackend, content: str, params: SamplingParams = GREEDY) -> list[Event]:
    return run(b, params, [{"role": "user", "content": content}])


def test_usage_and_timings_fill_the_metrics(fake: OpenAIBackend) -> None:
    *deltas, last = say(fake, "ok")
    assert [d.text for d in deltas if isinstance(d, Delta)] == ["Hello"]
    assert isinstance(last, Finished) and last.finish_reason == "stop"
    m = last.metrics
    assert (m.prompt_tokens, m.completion_tokens, m.prompt_eval_tokens, m.context_used) == (12, 1, 3, 13)


def test_params_mapping(fake: OpenAIBackend) -> None:
    say(fake, "ok", SamplingParams())
    body = _Fake.bodies[-1]
    assert (
        body["model"] == "m" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    )
    assert {"temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty"} <= body.keys()
    # Defaults: no llama.cpp extras, no seed, no stop, so a strict OpenAI server accepts the body.
    assert (
        not {"top_k", "min_p", "typical_p", "repeat_penalty", "grammar", "mirostat", "seed", "stop"}
        & body.keys()
    )
    say(fake, "ok", SamplingParams(top_k=5, seed=7, stop=["\n"], mirostat_mode=2, grammar='root ::= "a"'))
    body = _Fake.bodies[-1]
    assert (body["top_k"], body["seed"], body["stop"], body["mirostat"], body["mirostat_mode"]) == (
        5,
        7,
        ["\n"],
        2,
        2,
    )
    assert body["grammar"] == 'root ::= "a"' and "min_p" not in body


def test_remote_4xx_is_backend_error_with_its_message(fake: OpenAIBackend) -> None:
    with pytest.raises(BackendError) as err:
        say(fake, "400")
    assert (
        "HTTP 400" in err.value.message
        and "Unrecognized request argument supplied: top_k" in err.value.message
    )


def test_remote_5xx_is_model_unavailable(fake: OpenAIBackend) -> None:
    with pytest.raises(ModelUnavailable) as err:
        say(fake, "503")
    assert "HTTP 503" in err.value.message and "Loading model" in err.value.message


def test_stream_cut_short_is_backend_error(fake: OpenAIBackend) -> None:
    with pytest.raises(BackendError, match="without a finish reason"):
        say(fake, "truncated")


# -- concurrency: the engine passes requests through to the remote at once --------------------------


class _Overlap(BaseHTTPRequestHandler):
    """Streams a reply only once `both` requests are open: a client that sends one request at a time never
    gets past the barrier (it breaks after 20 s and the request fails)."""

    both = threading.Barrier(2, timeout=20)
    seen: list[tuple[str, float]] = []
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._note("open")
        try:
            _Overlap.both.wait()
        except threading.BrokenBarrierError:
            self._note("alone")
            self.send_error(500, "the other request never came")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in ({"content": "Hello"}, {"content": " there"}):
            body = {"choices": [{"delta": chunk, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.2)
        done = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self._note("close")

    def _note(self, what: str) -> None:
        with _Overlap.lock:
            _Overlap.seen.append((what, time.monotonic()))

    def log_message(self, *args: object) -> None:
        pass


def test_two_turns_stream_from_the_remote_at_the_same_time() -> None:
    """The engine does not queue requests for a remote backend (the server batches them itself): two turns
    started together are both open on the server at once, and each gets its whole reply."""
    from engine.chat import Engine

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Overlap)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    engine = Engine(OpenAIBackend(f"http://127.0.0.1:{srv.server_address[1]}", timeout=30))
    replies: dict[int, list[object]] = {}

    def turn(i: int) -> None:
        replies[i] = list(engine.stream([{"role": "user", "content": f"Hi {i}"}], GREEDY))

    try:
        threads = [threading.Thread(target=turn, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        engine.close()
        srv.shutdown()
    for i in range(2):
        assert "".join(e.text for e in replies[i] if isinstance(e, Delta)) == "Hello there", replies[i]
        last = replies[i][-1]
        assert isinstance(last, Finished) and last.finish_reason == "stop"
    kinds = [what for what, _ in sorted(_Overlap.seen, key=lambda s: s[1])]
    assert kinds == ["open", "open", "close", "close"], _Overlap.seen  # both open before either ends
