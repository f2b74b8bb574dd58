"""The model worker process, against the real server, model, processes and signals: the server never loads
libllama; a crash mid-reply (SIGSEGV, SIGABRT, kill -9) costs one interrupted reply, never the server or a
saved turn; safe mode for a crash at warm-up; the crash limit; model switches; SIGTERM mid-decode."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.backends.base import Finished
from engine.backends.repack import AMX_FLAGS, cpu_flags
from engine.backends.worker_client import WorkerBackend
from engine.config import ModelSettings, WorkerSettings
from engine.params import SamplingParams
from tests.helpers import GREEDY, ServerProcess, assert_error, parse_sse

pytestmark = pytest.mark.slow


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def health(server: ServerProcess) -> dict[str, Any]:
    resp = httpx.get(server.url + "/api/health", timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ready_pid(server: ServerProcess) -> int | None:
    worker = health(server).get("worker", {})
    return worker.get("pid") if worker.get("state") == "ready" else None


def next_ready_pid(server: ServerProcess, old: int | None) -> int:
    """A ready worker other than `old`, which health still reports until the supervisor sees it exit."""
    return int(wait_for(lambda: (pid := ready_pid(server)) not in (None, old) and pid, what="a new worker"))


def stream(server: ServerProcess, body: dict[str, Any]) -> list[tuple[str, Any]]:
    with server.client() as c:
        resp = c.post("/api/chat/stream", json=body)
    assert resp.status_code == 200, resp.text
    return parse_sse(resp.text)


@pytest.fixture
def crashy(model_path: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    fault = tmp_path / "fault"
    env = {
        "LLMCHAT_FAULT_FILE": str(fault),
        "LLM_WORKER__MAX_BACKOFF_S": "0.3",
        "LLM_WORKER__MAX_CRASHES": "100",
    }
    server = ServerProcess(tmp_path / "data", model=model_path, env=env).start()
    try:
        yield server, fault
    finally:
        server.stop()


def test_the_server_never_loads_libllama_the_worker_does(crashy: tuple[ServerProcess, Path]) -> None:
    server, _ = crashy
    assert server.proc is not None
    server_maps = maps(server.proc.pid)
    assert "libllama" not in server_maps and "libggml" not in server_maps
    worker = health(server)["worker"]
    assert worker["state"] == "ready" and worker["restarts"] == 0 and worker["last_exit"] is None
    assert "libllama" in maps(worker["pid"])
    assert worker["pid"] != server.proc.pid


def test_the_server_streams_through_uvloop_and_httptools(crashy: tuple[ServerProcess, Path]) -> None:
    """uvicorn takes them when they are installed, and falls back to pure Python (h11, asyncio's loop)
    silently: about 40% more server CPU per streamed reply. Both are in requirements.txt."""
    server, _ = crashy
    assert server.proc is not None
    health(server)
    server_maps = maps(server.proc.pid)
    assert "uvloop/loop." in server_maps and "httptools/parser/parser." in server_maps


@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGABRT"])
def test_a_crash_mid_reply_keeps_the_turns_and_the_partial_reply(
    crashy: tuple[ServerProcess, Path], sig: str
) -> None:
    server, fault = crashy
    params = {**GREEDY, "max_tokens": 24}
    first = stream(
        server, {"messages": [{"role": "user", "content": "Say hi."}], "session_id": "new", "params": params}
    )
    sid = first[-1][1]["session_id"]
    before = ready_pid(server)

    fault.write_text(f"{sig}@token:3")
    body = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "session_id": sid,
        "params": params,
    }
    events = stream(server, body)
    names = [name for name, _ in events]
    assert names[-1] == "error", events
    assert sig in events[-1][1]["error"]["message"] and "restarted" in events[-1][1]["error"]["message"]
    partial = "".join(data["delta"] for name, data in events if name == "message" and "delta" in data)
    assert partial  # the worker sends a request's first delta at once, the rest in bursts

    saved = httpx.get(f"{server.url}/api/sessions/{sid}").json()["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant", "user", "assistant"]
    assert saved[1]["content"] == "".join(d["delta"] for n, d in first if "delta" in d)
    assert not saved[1].get("interrupted")
    assert saved[3]["stopped"] and sig in saved[3]["interrupted"] and saved[3]["content"] == partial

    next_ready_pid(server, before)
    worker = health(server)["worker"]
    assert worker["restarts"] == 1 and worker["last_exit"]["reason"] == sig

    events = stream(
        server, {"messages": [{"role": "user", "content": "And now?"}], "session_id": sid, "params": params}
    )
    assert events[-1][1].get("done") is True, events
    assert len(httpx.get(f"{server.url}/api/sessions/{sid}").json()["messages"]) == 6


def _client(
    server: ServerProcess,
    n: int,
    stop: threading.Event,
    done: list[tuple[str, str]],
    failed: list[tuple[int, str]],
    errors: list[str],
) -> None:
    """Turn after turn on one session until `stop`; what went wrong is collected, never asserted here (an
    assertion in a thread only reaches pytest as a warning)."""
    sid = None
    turn = 0
    try:
        with server.client(timeout=120) as c:
            while not stop.is_set():
                turn += 1
                text = f"client {n} turn {turn}: say something."
                body = {"messages": [{"role": "user", "content": text}], "session_id": sid or "new"}
                resp = c.post("/api/chat", json={**body, "params": {**GREEDY, "max_tokens": 12}})
                if resp.status_code == 200:
                    sid = resp.json()["session_id"]
                    done.append((sid, text))
                else:
                    failed.append((resp.status_code, resp.text[:300]))
    except Exception as exc:  # the server stopped answering: the very thing this test must catch
        errors.append(f"client {n}, turn {turn}: {exc!r}")


def test_kill_9_of_the_worker_20_times_under_4_clients_loses_no_completed_turn(
    crashy: tuple[ServerProcess, Path],
) -> None:
    """With model.parallel 1 the worker generates one turn at a time; the other clients wait in the engine's
    queue, and their token counts are asked again of the restarted worker. So a kill costs at most the one
    turn being generated: at most 20 failed requests, each a 502 that names the SIGKILL, and every turn
    that completed is saved whole."""
    server, _ = crashy
    stop = threading.Event()
    done: list[tuple[str, str]] = []
    failed: list[tuple[int, str]] = []
    errors: list[str] = []
    clients = [
        threading.Thread(target=_client, args=(server, n, stop, done, failed, errors)) for n in range(4)
    ]
    for t in clients:
        t.start()
    rng = random.Random(7)
    try:
        for _ in range(20):
            pid = wait_for(lambda: ready_pid(server), what="a ready worker")
            time.sleep(rng.uniform(0.05, 0.8))
            os.kill(pid, signal.SIGKILL)
            try:
                next_ready_pid(server, pid)
            except AssertionError:
                raise AssertionError(f"{health(server)}\n{server.log_text()[-3000:]}") from None
    finally:
        stop.set()
        for t in clients:
            t.join(180)
    assert not any(t.is_alive() for t in clients), "a client hung"
    assert not errors, errors
    assert health(server)["worker"]["restarts"] == 20
    assert len(failed) <= 20, failed
    for status, text in failed:
        assert status == 502 and "SIGKILL" in text, (status, text)
    assert len(done) >= 4
    for sid, text in done:
        messages = httpx.get(f"{server.url}/api/sessions/{sid}").json()["messages"]
        i = next(i for i, m in enumerate(messages) if m["content"] == text)
        reply = messages[i + 1]
        assert reply["role"] == "assistant" and not reply["stopped"] and not reply.get("interrupted")


def test_a_request_queued_behind_a_crashing_one_runs_after_the_restart(
    crashy: tuple[ServerProcess, Path],
) -> None:
    """model.parallel 1: a second turn waits in the queue while the first streams. kill -9 of the worker
    ends the first with an error; the second had not reached the dead worker, so the restarted one serves
    it, and it completes."""
    server, _ = crashy
    before = wait_for(lambda: ready_pid(server), what="a ready worker")
    streaming = threading.Event()
    raw: dict[str, str] = {}

    def long_turn() -> None:
        body = {
            "messages": [{"role": "user", "content": "Write a long story about the sea."}],
            "session_id": "new",
            "params": {**GREEDY, "max_tokens": 400},
        }
        text = ""
        with httpx.stream("POST", server.url + "/api/chat/stream", json=body, timeout=300) as resp:
            for chunk in resp.iter_text():
                text += chunk
                if '"delta"' in text:
                    streaming.set()
        raw["first"] = text

    def queued_turn() -> None:
        body = {
            "messages": [{"role": "user", "content": "Say hi."}],
            "session_id": "new",
            "params": {**GREEDY, "max_tokens": 12},
        }
        raw["second"] = httpx.post(server.url + "/api/chat/stream", json=body, timeout=300).text

    first = threading.Thread(target=long_turn)
    first.start()
    assert streaming.wait(120), "the first turn never streamed"
    second = threading.Thread(target=queued_turn)
    second.start()
    wait_for(lambda: health(server)["queue"] == 2, 30, "the second turn to wait in the queue")
    os.kill(before, signal.SIGKILL)
    first.join(120)
    second.join(300)
    crashed, served = parse_sse(raw["first"]), parse_sse(raw["second"])
    assert crashed[-1][0] == "error" and "SIGKILL" in crashed[-1][1]["error"]["message"], crashed[-2:]
    assert served[-1][1].get("done") is True, served
    assert "".join(d.get("delta", "") for _, d in served).strip()
    assert served[-1][1]["metrics"]["queue_ms"] > 0
    assert next_ready_pid(server, before) != before and health(server)["worker"]["restarts"] == 1
    saved = httpx.get(f"{server.url}/api/sessions/{served[-1][1]['session_id']}").json()["messages"]
    assert saved[-1]["role"] == "assistant" and not saved[-1]["stopped"] and not saved[-1].get("interrupted")


def test_crashes_past_the_limit_turn_health_degraded_with_the_reason(
    model_path: Path, tmp_path: Path
) -> None:
    env = {"LLM_WORKER__MAX_CRASHES": "2", "LLM_WORKER__MAX_BACKOFF_S": "0.3"}
    with ServerProcess(tmp_path / "data", model=model_path, env=env) as server:
        first = wait_for(lambda: ready_pid(server))
        os.kill(first, signal.SIGKILL)
        os.kill(next_ready_pid(server, first), signal.SIGKILL)
        state = wait_for(
            lambda: health(server)["worker"]["state"] == "failed" and health(server), what="failed"
        )
        assert state["status"] == "degraded"
        assert "crashed 2 times" in state["reason"] and "model.repack" in state["reason"]
        assert state["worker"]["last_exit"]["reason"] == "SIGKILL"
        resp = httpx.post(server.url + "/api/chat", json={"messages": [{"role": "user", "content": "Hi"}]})
        assert_error(resp, 503, "crashed 2 times")


def test_a_crash_at_warm_up_restarts_with_repacking_off_and_is_remembered(
    model_path: Path, tmp_path: Path
) -> None:
    env = {"LLMCHAT_FAULT": "SIGSEGV@warmup-repack"}  # the Intel AMX crash, on any CPU
    amx = bool(AMX_FLAGS & cpu_flags())
    with ServerProcess(tmp_path / "data", model=model_path, env=env) as server:
        state = health(server)
        assert state["status"] == "ok" and state["model"]["repack"] is False
        reason = state["worker"]["safe_mode"]["reason"]
        assert ("AMX" in reason) if amx else ("SIGSEGV" in reason and "repacking off" in reason)
        assert stream(server, {"messages": [{"role": "user", "content": "Hi"}], "params": GREEDY})[-1][1][
            "done"
        ]
        log = server.log_text()
    if not amx:
        assert "safe mode" in log and "SIGSEGV" in log
        assert (tmp_path / "data" / "worker" / "safe_mode.json").is_file()
    with ServerProcess(
        tmp_path / "data", model=model_path, env=env, log_path=tmp_path / "second.log"
    ) as server:
        state = health(server)
        assert state["worker"]["restarts"] == 0 and state["model"]["repack"] is False
        assert state["worker"]["safe_mode"]["reason"] == reason
        assert "ended (SIGSEGV)" not in server.log_text() and "crashed" not in server.log_text()


@pytest.mark.timeout(240)  # before the fix the retry crashed again and again, with no end
@pytest.mark.parametrize("data", ["none", "unwritable"])
def test_safe_mode_retries_once_and_holds_when_it_cannot_be_remembered(
    model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    data: str,
) -> None:
    """A crash at warm-up with repacking on restarts the worker once with repacking off, even when the data
    dir cannot record it (no data dir, or `worker` is a file where the folder should be: unwritable even as
    root). Safe mode then holds for this backend's later restarts: a kill -9 brings the worker back without
    crashing at warm-up first."""
    monkeypatch.setenv("LLMCHAT_FAULT", "SIGSEGV@warmup-repack")  # the worker inherits it on every start
    data_dir = None
    if data == "unwritable":
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "worker").write_text("in the way")
    settings = ModelSettings(path=str(model_path), n_ctx=512, n_threads=1, parallel=1)
    amx = bool(AMX_FLAGS & cpu_flags())
    caplog.set_level(logging.INFO, logger="engine.worker")
    backend = WorkerBackend(settings, model_path, data_dir=data_dir, policy=WorkerSettings(max_backoff_s=0.3))
    try:
        assert backend.state == "ready" and backend.restarts == 0
        assert backend.model_info()["repack"] is False
        reason = backend.worker_status()["safe_mode"]["reason"]
        assert ("AMX" in reason) if amx else ("SIGSEGV" in reason and "repacking off" in reason)
        if data_dir is not None and not amx:
            assert "could not remember safe mode" in caplog.text
            assert (data_dir / "worker").read_text() == "in the way"
        params = SamplingParams(temperature=0, max_tokens=4)
        assert any(isinstance(e, Finished) for e in backend.stream(WARM, params, threading.Event()))

        first = backend.worker_status()["pid"]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: backend.state == "ready" and backend.restarts == 1, what="the restart")
        assert backend.worker_status()["pid"] != first
        assert (backend.last_exit or {}).get("reason") == "SIGKILL"
        assert backend.model_info()["repack"] is False
        assert caplog.text.count("safe mode for") == (0 if amx else 1)  # the restart did not crash first
        assert "ended (SIGSEGV)" not in caplog.text
        assert any(isinstance(e, Finished) for e in backend.stream(WARM, params, threading.Event()))
    finally:
        backend.close()


WARM = [{"role": "user", "content": "Hi"}]


def _family_rss(server: ServerProcess) -> int:
    assert server.proc is not None
    pid = wait_for(lambda: ready_pid(server))
    return rss_kb(server.proc.pid) + rss_kb(pid)


def test_a_model_switch_frees_the_old_worker_and_a_failed_one_keeps_it(
    model_path: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "copy.gguf").write_bytes(model_path.read_bytes())
    (models / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    env = {"LLM_MODELS_DIR": str(models)}
    with ServerProcess(tmp_path / "data", model=model_path, env=env) as server, server.client() as c:
        assert c.post("/api/chat", json={"messages": [{"role": "user", "content": "Hi"}]}).status_code == 200
        old_pid, before = ready_pid(server), _family_rss(server)
        resp = c.post("/api/models/load", json={"path": "copy.gguf"})
        assert resp.status_code == 200, resp.text
        assert c.post("/api/chat", json={"messages": [{"role": "user", "content": "Hi"}]}).status_code == 200
        new_pid = ready_pid(server)
        assert new_pid != old_pid and not Path(f"/proc/{old_pid}").exists()
        assert _family_rss(server) <= before * 1.1
        assert_error(c.post("/api/models/load", json={"path": "broken.gguf"}), 400, "broken.gguf")
        assert ready_pid(server) == new_pid
        assert health(server)["model"]["name"] == "copy.gguf"


def test_sigterm_during_a_decode_exits_cleanly(model_path: Path, tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", model=model_path) as server:
        assert server.proc is not None
        worker = wait_for(lambda: ready_pid(server))
        got_text = threading.Event()

        def long_reply() -> None:
            body = {
                "messages": [{"role": "user", "content": "Write a long story."}],
                "params": {"max_tokens": 400},
            }
            try:
                with httpx.stream("POST", server.url + "/api/chat/stream", json=body, timeout=60) as resp:
                    for line in resp.iter_lines():
                        if '"delta"' in line:
                            got_text.set()
            except httpx.HTTPError:
                pass

        t = threading.Thread(target=long_reply)
        t.start()
        assert got_text.wait(60)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        t.join(30)
        wait_for(lambda: not Path(f"/proc/{worker}").exists(), 15, "the worker to exit")
        assert "Segmentation fault" not in server.log_text() and "core dumped" not in server.log_text()


def test_the_terminal_client_runs_the_model_in_a_worker(model_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LLM_MODEL__N_THREADS": "1"}
    cmd = [sys.executable, "-c", _CLI_PROBE, str(model_path), str(tmp_path / "data")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "no libllama here; worker has it"


_CLI_PROBE = """
import sys
from pathlib import Path
from cli.__main__ import direct_client, parse_args
from cli.render import Output
client = direct_client(parse_args(["--model", sys.argv[1], "--data-dir", sys.argv[2]]), Output(False))
pid = client.rt.health()["worker"]["pid"]
assert "libllama" not in Path("/proc/self/maps").read_text()
assert "libllama" in Path(f"/proc/{pid}/maps").read_text()
client.rt.close()
print("no libllama here; worker has it")
"""


def test_the_worker_sends_a_first_delta_at_once_and_the_rest_in_joined_bursts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from multiprocessing import Pipe

    import orjson

    from engine.backends import worker as worker_module
    from engine.backends.worker import Worker

    monkeypatch.setattr(worker_module, "BURST_S", 2.0)  # long, so that only urgency can cut a burst short

    ours, theirs = Pipe()
    worker = Worker(ours)
    sender = threading.Thread(target=worker._send_loop, daemon=True)
    sender.start()
    worker.out.put([1, "d", "Once"])
    first = orjson.loads(theirs.recv_bytes())
    assert first["items"] == [[1, "d", "Once"]]
    started = time.monotonic()
    for piece in (" upon", " a", " time"):
        worker.out.put([1, "d", piece])
    worker.out.put([2, "r", 7])  # a reply to another request goes out at once, with what is waiting
    burst = orjson.loads(theirs.recv_bytes())
    assert burst["items"] == [[1, "d", " upon a time"], [2, "r", 7]]
    assert time.monotonic() - started < 1.5
    worker.out.put([1, "t", "hm"])
    worker.out.put([1, "d", "."])
    worker.out.put([1, "f", {"reason": "stop"}])
    worker.out.put(None)
    last = orjson.loads(theirs.recv_bytes())
    assert last["items"] == [[1, "t", "hm"], [1, "d", "."], [1, "f", {"reason": "stop"}]]
    sender.join(5)
    assert not sender.is_alive()


def test_a_cancel_during_a_long_prompt_reaches_the_worker_before_any_token(
    monkeypatch: pytest.MonkeyPatch, model_path: Path, tmp_path: Path
) -> None:
    """A turn's Cancel wakes the stream that waits on the worker, so the worker hears of it at once: with no
    item coming in while a long prompt is evaluated, a plain flag is looked at only every POLL_S (here a
    minute), and the first token would come before the cancel reached the worker."""
    from engine.backends import worker_client
    from engine.backends.base import Cancel

    monkeypatch.setattr(worker_client, "POLL_S", 60.0)
    settings = ModelSettings(path=str(model_path), n_ctx=4096, n_threads=2, n_batch=64, parallel=1)
    backend = WorkerBackend(settings, model_path, data_dir=tmp_path)
    try:
        prompt = [{"role": "user", "content": "Count the apples: " + "apple " * 1500}]
        cancel = Cancel()
        threading.Timer(0.5, cancel.set).start()
        events = list(backend.stream(prompt, SamplingParams(temperature=0, max_tokens=8), cancel))
    finally:
        backend.close()
    (finished,) = [e for e in events if isinstance(e, Finished)]
    assert finished.finish_reason == "cancelled" and finished.metrics.completion_tokens == 0, finished


def _voluntary_switches(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_the_worker_sender_wakes_once_a_burst_not_once_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a small CPU every thread wake-up takes time from the model's threads: tokens that join a burst do
    not wake the sender (counted by the kernel, per thread)."""
    from multiprocessing import Pipe

    import orjson

    from engine.backends import worker as worker_module
    from engine.backends.worker import Worker

    monkeypatch.setattr(worker_module, "BURST_S", 1.0)
    ours, theirs = Pipe()
    worker = Worker(ours)
    sender = threading.Thread(target=worker._send_loop, daemon=True)
    sender.start()
    worker.out.put([1, "d", "Once"])
    assert orjson.loads(theirs.recv_bytes())["items"] == [[1, "d", "Once"]]
    assert sender.native_id is not None
    before = _voluntary_switches(sender.native_id)
    for _ in range(200):
        worker.out.put([1, "d", "."])
        time.sleep(0.002)  # a token at a time, as the decode thread puts them
    assert orjson.loads(theirs.recv_bytes())["items"] == [[1, "d", "." * 200]]
    assert _voluntary_switches(sender.native_id) - before < 20
    worker.out.put(None)
    sender.join(5)
