"""The scenarios. Every comparison runs side by side in one run, alternating order, and keeps
every sample so the report can take medians."""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import clients, machine, servers
from .clients import Message, Sample

USER_PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
QUESTIONS = [
    "Hi! What is a good name for a cat?",
    "Why is that a good name?",
    "Suggest a name for a dog too.",
    "Which of the two is shorter?",
    "Write one sentence using both names.",
    "Now make it rhyme.",
    "What colour should the cat's collar be?",
    "And the dog's?",
    "Summarise our chat in one line.",
    "Thank you, goodbye!",
]

# Rows of the main table. The raw baseline is llama-cpp-python's generate() loop in a process of its own.
RAW_CHAT = "llama-cpp-python create_chat_completion(stream=True), in-process"
RAW = "llama-cpp-python generate() loop, in-process"
ENGINE = "ours: Engine.stream, in-process"
# the same Engine over the worker process, as the server runs it: this row against ENGINE is the worker's cost
ENGINE_WORKER = "ours: Engine.stream through the worker process"
SSE = "ours: /api/chat/stream (SSE)"
OPENAI = "ours: /v1/chat/completions (stream)"
UI = "ours: Gradio UI (the page's queue protocol)"
PEER = "llama_cpp.server /v1/chat/completions (stream)"
NATIVE = "llama.cpp llama-server /v1/chat/completions (stream)"
ROWS = [RAW_CHAT, RAW, ENGINE, ENGINE_WORKER, SSE, OPENAI, UI, PEER, NATIVE]


def params(max_tokens: int, seed: int = 42) -> dict[str, Any]:
    """Identical sampling for every implementation: greedy, no repeat penalty, fixed seed."""
    return {
        "temperature": 0.0,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "repeat_penalty": 1.0,
        "seed": seed,
        "max_tokens": max_tokens,
    }


STORY_ASK = "Write a long, detailed story about {}."
SUBJECTS = [
    "a lighthouse keeper",
    "a lost robot",
    "a dragon who bakes bread",
    "two rival chefs",
    "a desert caravan",
    "a haunted library",
    "a ship in a storm",
    "a girl who talks to crows",
]


def system(nonce: str) -> Message:
    # A fresh nonce at the start of every prompt: nothing is reused from the previous run (cold TTFT).
    return {"role": "system", "content": f"Conversation {nonce}. You are a helpful assistant."}


def nonce() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Options:
    model: Path
    repeats: int
    max_tokens: int
    quick: bool
    threads: int
    log: Callable[[str], None] = print
    noise_limit: float = 0.1  # a sample during which other processes used more of the machine is redone
    quiet_wait_s: float = 60.0  # how long to wait for a quiet machine before each sample
    retries: int = 3


def measured(opts: Options, run: Callable[[], Sample], retry: bool = True) -> Sample:
    """One sample on a quiet machine: wait for quiet, redo it if other processes got busy meanwhile."""
    for attempt in range(opts.retries + 1 if retry else 1):
        machine.wait_quiet(opts.quiet_wait_s, opts.noise_limit)
        noise = machine.Noise()
        s = run()
        s.noise = round(noise.others(), 3)
        s.attempts = attempt + 1
        if s.noise <= opts.noise_limit:
            break
    return s


@dataclass
class Bench:
    """Everything under test, started once: the in-process workers and the three servers."""

    opts: Options
    setup: servers.Setup
    raw: Any = None  # inproc.Worker: the raw rows, in a process of their own
    engine: Any = None  # inproc.Worker: our Engine.stream, in a process of its own
    engine_worker: Any = None  # inproc.Worker: our Engine.stream over a model worker process
    ours: servers.ServerProcess | None = None
    peer: servers.ServerProcess | None = None
    native: servers.ServerProcess | None = None
    native_missing: str | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=600))
    send: clients.SendEvent | None = None
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-data-")))
    startup: dict[str, list[float]] = field(default_factory=dict)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        log = self.opts.log
        log(
            "starting servers: ours, llama_cpp.server" + (", llama-server" if servers.native_binary() else "")
        )
        self.ours = self._start(servers.ours(self.setup, self.data_dir))
        self.peer = self._start(servers.peer(self.setup))
        exe = servers.native_binary()
        if exe is None:
            self.native_missing = "not built (run make bench-native)"
        else:
            self.native = self._start(servers.native(self.setup, exe))
        log("loading the in-process rows (one process each)")
        from .inproc import Worker

        model, threads, n_ctx = str(self.setup.model), self.setup.threads, self.setup.n_ctx
        self.raw = Worker("raw", model, threads, n_ctx)
        self.engine = Worker("ours", model, threads, n_ctx)
        self.engine_worker = Worker("worker", model, threads, n_ctx)
        self.send = clients.find_send_event(self.ours.url, self.http)

    def _start(self, server: servers.ServerProcess) -> servers.ServerProcess:
        server.start()
        self.startup.setdefault(server.name, []).append(round(server.startup_s or 0, 2))
        return server

    def restart_ours(self) -> None:
        """One more start-up sample for our server (the running one is replaced)."""
        assert self.ours is not None
        self.ours.stop()
        self.ours = self._start(servers.ours(self.setup, self.data_dir))
        self.send = clients.find_send_event(self.ours.url, self.http)

    def close(self) -> None:
        for s in (self.ours, self.peer, self.native):
            if s is not None:
                s.stop()
        for w in (self.raw, self.engine, self.engine_worker):
            if w is not None:
                w.close()
        self.http.close()

    # --- one reply per path --------------------------------------------------------------------------

    def run_row(self, row: str, p: dict[str, Any]) -> Sample:
        msgs = [system(nonce()), {"role": "user", "content": USER_PROMPT}]
        if row == RAW_CHAT:
            return self.raw.run(msgs, p, how="chat")
        if row == RAW:
            return self.raw.run(msgs, p)
        if row == ENGINE:
            return self.engine.run(msgs, p)
        if row == ENGINE_WORKER:
            return self.engine_worker.run(msgs, p)
        assert self.ours is not None and self.peer is not None
        if row == SSE:
            return clients.sse(self.http, self.ours.url, msgs, p)
        if row == OPENAI:
            return clients.openai(self.http, self.ours.url, msgs, p)
        if row == UI:
            sid = self.new_session(msgs[0]["content"], p)
            return clients.gradio(self.send, self.http, self.ours.url, USER_PROMPT, sid)
        if row == PEER:
            return clients.openai(self.http, self.peer.url, msgs, p)
        if row == NATIVE and self.native is not None:
            return clients.openai(self.http, self.native.url, msgs, p)
        raise KeyError(row)

    def new_session(
        self, system_prompt: str, p: dict[str, Any], messages: list[Message] | None = None
    ) -> str:
        """A session on our server with these params (the Gradio path takes them from the session)."""
        from engine.session_formats import SCHEMA_VERSION

        doc = {
            "schema_version": SCHEMA_VERSION,
            "system_prompt": system_prompt,
            "params": p,
            "messages": messages or [],
        }
        assert self.ours is not None
        r = self.http.post(self.ours.url + "/api/sessions/import", json=doc)
        r.raise_for_status()
        return str(r.json()["id"])


# --- scenarios --------------------------------------------------------------------------------------


def load(opts: Options, setup: servers.Setup) -> dict[str, Any]:
    """Model load time and RSS in fresh processes (raw Llama vs our backend), plus Gradio's import cost."""
    kinds = ["raw", "ours"]
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in [*kinds, "gradio"]}
    for r in range(max(2, opts.repeats if not opts.quick else 2)):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            samples[kind].append(_probe(kind, setup))
    samples["gradio"].append(_probe("gradio", setup))
    return samples


def _probe(kind: str, setup: servers.Setup) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.probe", kind, str(setup.model), str(setup.threads), str(setup.n_ctx)]
    out = subprocess.run(cmd, cwd=servers.ROOT, capture_output=True, text=True, timeout=300, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def throughput(b: Bench) -> dict[str, list[dict[str, Any]]]:
    """Every row, `repeats` times, order reversed on every other pass, with the raw baseline measured
    between every two rows: each row's sample carries the mean of the raw samples just before and just
    after it (`raw_pair`), seconds apart, because this machine's speed drifts from one second to the next
    (the same process reads 126, then 114, then 104 tok/s). The raw row keeps the first of each pass."""
    opts = b.opts
    rows = [r for r in ROWS if r != NATIVE or b.native is not None]
    warm = params(8)
    for row in rows:
        b.run_row(row, warm)
    out: dict[str, list[dict[str, Any]]] = {r: [] for r in rows}
    others = [r for r in rows if r != RAW]
    p = params(opts.max_tokens)

    def sample(row: str) -> dict[str, Any]:
        return measured(opts, lambda: b.run_row(row, p)).to_dict()

    for rep in range(opts.repeats):
        before = sample(RAW)
        out[RAW].append(before)
        for row in others if rep % 2 == 0 else others[::-1]:
            s = sample(row)
            after = sample(RAW)
            s["raw_pair"] = {
                k: round((before[k] + after[k]) / 2, 2)
                for k in ("decode_tok_s", "ttft_ms")
                if before.get(k) and after.get(k)
            }
            out[row].append(s)
            before = after
        opts.log(f"  pass {rep + 1}/{opts.repeats} done")
    return out


def multi_turn(b: Bench, max_tokens: int) -> dict[str, list[list[dict[str, Any]]]]:
    """A 10-turn conversation, whole history sent each turn: ours (/api/chat/stream) and the peer."""
    assert b.ours is not None and b.peer is not None
    impls: dict[str, Callable[[list[Message]], Sample]] = {
        "ours": lambda m: clients.sse(b.http, b.ours.url, m, params(max_tokens)),  # type: ignore[union-attr]
        "peer": lambda m: clients.openai(b.http, b.peer.url, m, params(max_tokens)),  # type: ignore[union-attr]
    }
    out: dict[str, list[list[dict[str, Any]]]] = {k: [] for k in impls}
    names = list(impls)
    for rep in range(1 if b.opts.quick else max(2, b.opts.repeats // 2)):
        for name in names if rep % 2 == 0 else names[::-1]:
            msgs: list[Message] = [system(nonce())]
            turns = []
            prev_ctx = 0
            for q in QUESTIONS:
                msgs.append({"role": "user", "content": q})
                s = measured(b.opts, functools.partial(impls[name], list(msgs)), retry=False)
                d = s.to_dict()
                if s.prompt_tokens is not None:
                    d["new_tokens"] = s.prompt_tokens - prev_ctx
                    prev_ctx = s.prompt_tokens + (s.tokens or 0)
                turns.append(d)
                msgs.append({"role": "assistant", "content": s.text})
            out[name].append(turns)
    return out


def long_chat(b: Bench, max_tokens: int) -> dict[str, Any]:
    """Server CPU per streamed reply at history 2 vs 200, through Gradio and through SSE (same session)."""
    assert b.ours is not None
    p = params(max_tokens)
    out: dict[str, Any] = {}
    reps = 2 if b.opts.quick else 3
    for k, n in enumerate((2, 200)):
        history: list[Message] = []
        # short messages: the UI's cost grows with their count, the model's with their tokens
        for i in range(n // 2):
            history.append({"role": "user", "content": f"n{i}"})
            history.append({"role": "assistant", "content": "ok"})
        sid = b.new_session(system(nonce())["content"], p, history)
        clients.sse(
            b.http, b.ours.url, [{"role": "user", "content": "Say hello."}], p, session_id=sid
        )  # warm KV
        rows: dict[str, list[dict[str, Any]]] = {"gradio": [], "sse": []}
        for rep in range(reps):
            for path in ("gradio", "sse") if (rep + k) % 2 == 0 else ("sse", "gradio"):
                text = f"Write a long story about lighthouse keeper number {rep * 2 + 1}."
                machine.wait_quiet(b.opts.quiet_wait_s, b.opts.noise_limit)
                noise = machine.Noise()
                cpu0, loop0 = b.ours.cpu_s(), b.ours.loop_cpu_s()
                if path == "gradio":
                    s = clients.gradio(b.send, b.http, b.ours.url, text, sid)
                else:
                    s = clients.sse(
                        b.http, b.ours.url, [{"role": "user", "content": text}], p, session_id=sid
                    )
                time.sleep(0.2)  # let the server finish its bookkeeping (session save) before reading CPU
                s.noise = round(noise.others(), 3)
                d = s.to_dict()
                d["server_cpu_ms"] = round((b.ours.cpu_s() - cpu0) * 1000, 1)
                d["loop_cpu_ms"] = round((b.ours.loop_cpu_s() - loop0) * 1000, 1)
                rows[path].append(d)
        out[str(n)] = rows
    return out


def browser_chat(b: Bench, max_tokens: int) -> dict[str, Any]:
    """Page load, Enter-to-first-text and long tasks in Chromium, for a 2- and a 1000-message chat."""
    from engine.session_formats import SCHEMA_VERSION

    from . import browser_chat as bc

    missing = bc.chromium_missing()
    if missing:
        return {"missing": missing}
    assert b.ours is not None
    p = params(max_tokens)

    def doc(messages: list[Message]) -> dict[str, Any]:
        system_prompt = system(nonce())["content"]
        title = f"bench {len(messages)} messages"
        return {
            "schema_version": SCHEMA_VERSION,
            "title": title,
            "system_prompt": system_prompt,
            "params": p,
            "messages": messages,
        }

    return bc.run(b.ours.url, doc, 2 if b.opts.quick else max(3, b.opts.repeats), b.opts.log)


SLOTS = 8  # both servers get as many sequences as the largest burst: llama-server -np 8, model.parallel 8


def concurrency(b: Bench, max_tokens: int) -> dict[str, Any]:
    """N clients at once on /v1/chat/completions: ours beside llama-server -np 8, both in both KV layouts
    (when llama-server is built), each burst right after the others, in rounds: total tok/s, TTFT, errors."""
    servers_: dict[str, servers.ServerProcess] = {}
    try:
        servers_["ours"] = b._start(servers.ours(b.setup, b.data_dir / "concurrency", parallel=SLOTS))
        exe = servers.native_binary()
        if exe is not None:
            # ours in llama-server -np's own layout too: a KV cache of n_ctx / 8 cells per slot
            split = servers.ours(b.setup, b.data_dir / "concurrency-split", parallel=SLOTS, split=True)
            servers_[split.name] = b._start(split)
            for unified in (False, True):
                srv = b._start(servers.native(b.setup, exe, parallel=SLOTS, unified=unified))
                servers_[srv.name] = srv
        out: dict[str, Any] = {}
        # single bursts swing by 20% on 2 cores (a quick run's one burst at 8 clients read 1.74x TTFT once)
        rounds = 3 if b.opts.quick else max(1, b.opts.repeats)
        for n in (1, 4, 8):
            out[str(n)] = {name: [] for name in servers_}
            for r in range(rounds):
                # every server gets the same chats, each asking for a story longer than max_tokens: every
                # client decodes max_tokens, and each burst does the same work (short answers that end
                # where each server's greedy pick parts on a near tie made one burst 129 tokens and the
                # other 184)
                chats = [
                    [
                        system(nonce()),
                        {"role": "user", "content": STORY_ASK.format(SUBJECTS[i % len(SUBJECTS)])},
                    ]
                    for i in range(n)
                ]
                names = sorted(servers_)
                for name in names[r % len(names) :] + names[: r % len(names)]:  # the order rotates
                    out[str(n)][name].append(_burst_row(servers_[name].url, chats, max_tokens, b))
        return out
    finally:
        for srv in servers_.values():
            srv.stop()


def _burst_row(url: str, chats: list[list[Message]], max_tokens: int, b: Bench) -> dict[str, Any]:
    machine.wait_quiet(b.opts.quiet_wait_s, b.opts.noise_limit)
    noise = machine.Noise()
    started = time.perf_counter()
    results = _burst(url, chats, max_tokens)
    wall = time.perf_counter() - started
    ok = [r for r in results if isinstance(r, Sample)]
    tokens = sum(s.tokens or 0 for s in ok)
    return {
        "clients": len(chats),
        "wall_s": round(wall, 2),
        "tokens": tokens,
        "throughput_tok_s": round(tokens / wall, 1) if wall else None,
        "ttft_ms": [s.ttft_ms for s in ok],
        "decode_tok_s": [s.decode_tok_s for s in ok],
        "errors": [repr(r) for r in results if not isinstance(r, Sample)],
        "noise": round(noise.others(), 3),
    }


def _burst(url: str, chats: list[list[Message]], max_tokens: int) -> list[Sample | BaseException]:
    """A client per chat, each on its own connection, released at the same moment."""
    results: list[Sample | BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(chats))

    def one(msgs: list[Message]) -> None:
        s: Sample | BaseException
        with httpx.Client(timeout=600) as c:
            barrier.wait()
            try:
                s = clients.openai(c, url, msgs, params(max_tokens))
            except Exception as exc:
                s = exc
        with lock:
            results.append(s)

    threads = [threading.Thread(target=one, args=(msgs,)) for msgs in chats]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def idle_memory(b: Bench) -> dict[str, Any]:
    """RSS of each server process after warm-up, idle."""
    time.sleep(0.5)
    out = {}
    for s in (b.ours, b.peer, b.native):
        if s is not None:
            out[s.name] = {"rss_mb": s.rss_mb(), "startup_s": b.startup.get(s.name, [])}
    return out


def median(values: list[Any]) -> Any:
    vals = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(vals), 2) if vals else None


LONG_TOPICS = ("lighthouses", "tea")


def _long_message(topic: str, words: int = 620) -> str:
    """About 1,500 tokens of varied text on `topic` (nonce-free: the two chats differ from the first word)."""
    base = f"Notes on {topic}, to keep in mind for this conversation. "
    lines = [
        f"{base}Point {i}: {topic} matter because of reason number {i * 7 % 97}." for i in range(words // 12)
    ]
    return " ".join(lines) + f" Now, in one sentence, what is the most important thing about {topic}?"


def slots(b: Bench, max_tokens: int) -> dict[str, Any]:
    """KV slots and the prompt cache on our server (parallel 4): two chats of about 1,500 tokens, turns
    alternating between them (TTFT on return vs a cold evaluation of the same chat), then a restart and
    one more turn of the first chat (restored from the cache on disk)."""
    data_dir = b.data_dir / "slots"
    srv = b._start(servers.ours(b.setup, data_dir, parallel=4))
    p = params(max_tokens)
    try:
        sids: dict[str, str] = {}
        cold: list[dict[str, Any]] = []
        for topic in LONG_TOPICS:
            first = [{"role": "user", "content": _long_message(topic)}]
            s = clients.sse(b.http, srv.url, first, p, session_id="new")
            sids[topic] = s.session_id or ""
            cold.append(s.to_dict())
        back: list[dict[str, Any]] = []
        turns = 2 if b.opts.quick else 5
        for i in range(turns):
            for topic in LONG_TOPICS:
                ask = [{"role": "user", "content": f"And point {i + 2}? One sentence."}]
                back.append(clients.sse(b.http, srv.url, ask, p, session_id=sids[topic]).to_dict())
        srv.stop()
        srv = b._start(servers.ours(b.setup, data_dir, parallel=4))
        again = [{"role": "user", "content": "To sum up, in one sentence?"}]
        reopened = clients.sse(b.http, srv.url, again, p, session_id=sids[LONG_TOPICS[0]]).to_dict()
        return {"cold": cold, "return": back, "reopened": reopened}
    finally:
        srv.stop()
