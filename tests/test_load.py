"""Load: 8 concurrent clients (REST+SSE and the Gradio UI path, mixed) x 5 turns on one model.

Every reply completes and equals the reply the same prompt gets alone (greedy, fixed seed): no crosstalk.
/api/health stays fast throughout, and a waiting UI client is told its place in the queue."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.harness import ServerProcess, artifacts_on_failure, sse_events, start_server, ui_send
from webui.markup import unescape_text

pytestmark = pytest.mark.slow

CLIENTS = 8
TURNS = 5
TOPICS = ["fruit", "river", "planet", "tree", "bird", "metal", "city", "colour"]
HEALTH_P95_MS = 200.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # No prompt cache on disk: a replay "alone" must reuse the same cached prefix as the original turn, and
    # the disk cache would hand it a longer one (the original turn's own saved state, reply included).
    s = start_server(tmp_path_factory.mktemp("load"), max_tokens=12, env={"LLM_MODEL__SLOT_CACHE": "false"})
    yield s
    s.stop()


class HealthPoller(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.get(self.url + "/api/health")
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                self.stop.wait(0.1)

    def p95(self) -> float:
        return statistics.quantiles(self.latencies_ms, n=20)[-1]


def sse_client(url: str, n: int, start: threading.Barrier, out: dict[str, Any]) -> None:
    sid = "new"
    with httpx.Client(timeout=300) as c:
        start.wait()
        for t in range(TURNS):
            text = f"Client {n}, turn {t}: name one {TOPICS[n]}."
            body = {"messages": [{"role": "user", "content": text}], "session_id": sid}
            deltas, done = [], None
            with c.stream("POST", url + "/api/chat/stream", json=body) as r:
                assert r.status_code == 200, r.read()
                for name, data in sse_events(r):
                    assert name != "error", data
                    if "delta" in data:
                        deltas.append(data["delta"])
                    elif data.get("done"):
                        done = data
            assert done is not None, f"client {n} turn {t}: the stream ended without a done event"
            sid = done["session_id"]
            out["turns"].append((text, "".join(deltas), done["finish_reason"]))
    out["session"] = sid


def ui_client(url: str, n: int, start: threading.Barrier, out: dict[str, Any]) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    sid = None
    start.wait()
    for t in range(TURNS):
        text = f"Client {n}, turn {t}: name one {TOPICS[n]}."
        job = ui_send(client, text, sid, submit=True)
        final = job.result(timeout=300)
        chat_view, sid, status = final
        out["statuses"].extend(str(o[2]) for o in job.outputs() if isinstance(o, list | tuple) and len(o) > 2)
        last = chat_view[-1]
        content = last["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        assert last["role"] == "assistant", chat_view
        out["turns"].append((text, unescape_text(str(content)), None))
    out["session"] = sid


def test_eight_concurrent_clients_get_their_own_replies(server: ServerProcess) -> None:
    start = threading.Barrier(CLIENTS)
    results: list[dict[str, Any]] = [{"turns": [], "statuses": [], "kind": ""} for _ in range(CLIENTS)]
    threads = []
    for n in range(CLIENTS):
        kind = "sse" if n % 2 == 0 else "ui"
        results[n]["kind"] = kind
        target = sse_client if kind == "sse" else ui_client

        def run(n: int = n, target: Any = target) -> None:
            try:
                target(server.url, n, start, results[n])
            except BaseException as exc:  # reported by the main thread
                results[n]["error"] = repr(exc)

        threads.append(threading.Thread(target=run, daemon=True))
    poller = HealthPoller(server.url)
    with artifacts_on_failure("test_load", server):
        poller.start()
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        load_s = time.monotonic() - t0
        poller.stop.set()
        poller.join(15)

        errors = {n: r["error"] for n, r in enumerate(results) if "error" in r}
        assert not errors, errors
        assert all(len(r["turns"]) == TURNS for r in results), [len(r["turns"]) for r in results]
        sessions = [r["session"] for r in results]
        assert len(set(sessions)) == CLIENTS, f"clients shared a session: {sessions}"

        # Every reply is on disk in its own session, in order, and equals the reply its prompt gets alone.
        # "Alone" replays the prompts round-robin across clients, as the engine's FIFO served them, so each
        # replay reuses the same cached prefix as the original (KV entries written while generating differ in
        # the last bits from the same tokens evaluated as a prompt, which can flip a greedy near-tie). A turn
        # is compared when both reused the same number of prompt tokens: nearly all of them.
        stored = {}
        for n, r in enumerate(results):
            sid = r["session"]
            msgs = httpx.get(f"{server.url}/api/sessions/{sid}", timeout=30).json()["messages"]
            prompt = httpx.get(f"{server.url}/api/sessions/{sid}/prompt", timeout=30).json()
            users = [m["content"] for m in msgs if m["role"] == "user"]
            replies = [m for m in msgs if m["role"] == "assistant"]
            assert users == [t[0] for t in r["turns"]], (n, users)
            assert [m["content"] for m in replies] == [t[1] for t in r["turns"]], (n, r["kind"], r["turns"])
            user_at = [i for i, m in enumerate(prompt) if m["role"] == "user"]
            assert len(user_at) == TURNS, prompt
            stored[n] = (prompt, user_at, replies)
        mismatches, compared = [], 0
        t1 = time.monotonic()
        for t in range(TURNS):
            for n in range(CLIENTS):
                prompt, user_at, replies = stored[n]
                body = {"messages": prompt[: user_at[t] + 1]}
                alone = httpx.post(f"{server.url}/api/chat", json=body, timeout=120)
                assert alone.status_code == 200, alone.text
                got, m = alone.json()["reply"], alone.json()["metrics"]
                ref = replies[t]["metrics"]
                if (
                    ref["prompt_tokens"] - ref["prompt_eval_tokens"]
                    != m["prompt_tokens"] - m["prompt_eval_tokens"]
                ):
                    continue  # served from a different cached prefix: not the same computation
                compared += 1
                if got != replies[t]["content"]:
                    mismatches.append((n, results[n]["kind"], t, replies[t]["content"], got))
        seq_s = time.monotonic() - t1

        waiting = [s for r in results for s in r["statuses"] if "Waiting for the model" in s]
        p95 = poller.p95()
        print(
            f"\nload: {CLIENTS} clients x {TURNS} turns in {load_s:.1f} s; sequential replay {seq_s:.1f} s, "
            f"{compared} replies compared; "
            f"/api/health p95 {p95:.0f} ms, max {max(poller.latencies_ms):.0f} ms over "
            f"{len(poller.latencies_ms)} polls; {len(waiting)} UI updates showed a queue place: {waiting[:1]}"
        )
        assert not mismatches, f"replies differ from the same prompt alone (crosstalk?): {mismatches}"
        assert compared >= 0.8 * CLIENTS * TURNS, (
            f"only {compared} replies were served from a comparable cache"
        )
        assert not poller.failures, poller.failures[:5]
        assert len(poller.latencies_ms) >= 20
        assert p95 < HEALTH_P95_MS, f"/api/health p95 {p95:.0f} ms under load"
        assert waiting, "no UI client was shown its place in the queue"
