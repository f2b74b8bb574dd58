"""Faults against the real server and model: kill -9 mid-stream, a full disk, a client that goes away, a model
file that is missing or corrupt at start, and a model switch that fails."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.session_formats import session_from_doc
from tests.browser.harness import (
    MODEL,
    ServerProcess,
    artifacts_on_failure,
    require_model,
    sse_events,
    start_server,
    ui_send,
    write_config,
)

pytestmark = pytest.mark.slow

KILLS = 20


# --- helpers ------------------------------------------------------------------------------------------


def check_data_dir(data: Path) -> list[str]:
    """Every session file (and .bak) parses and validates; nothing was set aside as corrupt. Returns ids."""
    folder = data / "sessions"
    ids = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.endswith(".tmp"):
            continue  # an interrupted atomic write; checked separately
        doc = orjson.loads(path.read_bytes())  # raises on a torn write
        stem = path.name.split(".")[0]
        session_from_doc(doc, stem)
        if path.suffix == ".json":
            ids.append(stem)
    corrupt = data / "corrupt"
    assert not corrupt.exists() or not any(corrupt.iterdir()), (
        f"files were set aside: {list(corrupt.iterdir())}"
    )
    return ids


def stream_turn(url: str, body: dict[str, Any], out: dict[str, Any]) -> None:
    """POST /api/chat/stream, recording deltas and the done event in `out` until it ends or breaks."""
    out["deltas"] = []
    try:
        with (
            httpx.Client(timeout=60) as c,
            c.stream("POST", url + "/api/chat/stream", json=body) as r,
        ):
            out["status"] = r.status_code
            for name, data in sse_events(r):
                if name == "error":
                    out["error"] = data
                elif "delta" in data:
                    out["deltas"].append(data["delta"])
                elif data.get("done"):
                    out["done"] = data
    except httpx.HTTPError as exc:  # the server was killed
        out["broken"] = repr(exc)
    finally:
        out["ended"] = True


def stored(server: ServerProcess, sid: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/api/sessions/{sid}", timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def chat(server: ServerProcess, text: str, **body: Any) -> httpx.Response:
    return httpx.post(
        server.url + "/api/chat", json={"messages": [{"role": "user", "content": text}], **body}, timeout=120
    )


# --- kill -9 ------------------------------------------------------------------------------------------


def _wait_for_moment(out: dict[str, Any], rng: random.Random) -> str:
    """Sleep until a random moment of the turn: before the first token, after n tokens, or once it is done."""
    moment = rng.choices(["early", "mid", "done"], weights=[1, 2, 1])[0]
    deadline = time.monotonic() + 30
    if moment == "early":  # while the request is parsed, queued, saved or the prompt evaluated
        time.sleep(rng.uniform(0.0, 0.5))
    elif moment == "mid":
        n = rng.randint(1, 30)
        while len(out["deltas"]) < n and "ended" not in out and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
    else:  # the done event is sent only after the turn was written: it must survive an immediate kill
        while "ended" not in out and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.1))
    return moment


def test_kill_9_mid_stream_keeps_every_completed_turn(tmp_path: Path) -> None:
    """20 times: start the server, stream a turn into a session, kill -9 at a random moment. Every turn
    whose done event arrived is on disk afterwards, and every session file parses. One data dir throughout."""
    require_model()
    cfg = write_config(tmp_path / "config.yaml", max_tokens=48)
    server = ServerProcess(tmp_path / "data", config=cfg, log_path=tmp_path / "server.log")
    rng = random.Random(8)  # random moments, the same ones on every run
    completed: dict[str, list[tuple[str, str]]] = {}
    moments: dict[str, int] = {}
    sid: str | None = None
    kills = done_before_kill = 0
    started = time.monotonic()
    with artifacts_on_failure("test_faults-kill9", server):
        try:
            for i in range(KILLS):
                server.start()
                _check_completed_turns(server, completed)
                if sid is None or len(completed.get(sid, [])) >= 4:
                    sid = None  # keep sessions short: a new one every few turns
                text = f"Turn {i}: name an animal and a colour."
                body = {"messages": [{"role": "user", "content": text}], "session_id": sid or "new"}
                out: dict[str, Any] = {}
                t = threading.Thread(target=stream_turn, args=(server.url, body, out), daemon=True)
                t.start()
                moment = _wait_for_moment(out, rng)
                moments[moment] = moments.get(moment, 0) + 1
                server.kill9()
                kills += 1
                t.join(30)
                assert not t.is_alive(), "the client did not notice the server was gone"
                if "done" in out:
                    done_before_kill += 1
                    sid = out["done"]["session_id"]
                    completed.setdefault(sid, []).append((text, "".join(out["deltas"])))
            server.start()
            ids = _check_completed_turns(server, completed)
        finally:
            server.stop()
    elapsed = time.monotonic() - started
    temp = sorted(p.name for p in (tmp_path / "data" / "sessions").glob(".*.tmp"))
    print(
        f"\nkill -9: {kills} kills survived ({moments}), {done_before_kill} turns completed before a kill, "
        f"{len(ids)} session files all parse, {len(temp)} interrupted temp files, {elapsed:.0f} s"
    )
    assert kills == KILLS
    assert done_before_kill >= 3, "too few turns completed to check anything"
    assert done_before_kill < KILLS, "every kill came after the turn ended: no kill hit a stream"


def _check_completed_turns(server: ServerProcess, completed: dict[str, list[tuple[str, str]]]) -> list[str]:
    ids = check_data_dir(server.data_dir)
    listed = {s["id"] for s in httpx.get(server.url + "/api/sessions", timeout=30).json()}
    assert set(ids) <= listed, f"sessions on disk missing from the list: {set(ids) - listed}"
    for sid in ids:  # what was cut off is marked as such: nothing unfinished looks like a finished reply
        for m in stored(server, sid)["messages"]:
            if m["role"] == "assistant" and not m["metrics"] and not m["greeting"]:
                assert m["stopped"], f"an unfinished reply in {sid} is not marked stopped: {m}"
    for sid, turns in completed.items():
        msgs = stored(server, sid)["messages"]
        pairs = [
            (a["content"], b["content"]) for a, b in zip(msgs, msgs[1:], strict=False) if a["role"] == "user"
        ]
        users = [m["content"] for m in msgs if m["role"] == "user"]
        for text, reply in turns:
            if reply:
                assert (text, reply) in pairs, f"completed turn {text!r} lost from {sid}: {pairs}"
            else:  # an empty reply is not kept; the user's turn is
                assert text in users, f"completed turn {text!r} lost from {sid}: {users}"
    return ids


# --- full disk ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def data_volume(base: Path, method: str) -> Iterator[Path]:
    """The data dir: on its own small tmpfs for a real ENOSPC, or a plain folder for RLIMIT_FSIZE."""
    data = base / "data"
    data.mkdir(parents=True)
    if method == "enospc":
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the efbig case covers a full disk")
    try:
        yield data
    finally:
        if method == "enospc":
            subprocess.run(["umount", "-l", str(data)], capture_output=True)


class FullDisk:
    """Make writes fail: fill the tmpfs (ENOSPC) or cap the server's file size (EFBIG, works unprivileged)."""

    def __init__(self, method: str, data: Path, pid: int) -> None:
        self.method, self.data, self.pid = method, data, pid
        self.filler = data / "filler.bin"
        self.limits = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)

    def fill(self) -> None:
        if self.method == "efbig":  # only the soft limit, so it can be raised again without privileges
            self.limits = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (256, self.limits[1]))
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)

    def free(self) -> None:
        if self.method == "efbig":
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, self.limits)
        else:
            self.filler.unlink(missing_ok=True)


def _gradio_send(client: Any, text: str, sid: str) -> tuple[list[Any], str]:
    chat_view, _sid, status = ui_send(client, text, sid)
    return chat_view, str(status)


def _texts(chat_view: list[Any]) -> list[str]:
    out = []
    for m in chat_view:
        content = m["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append(str(content))
    return out


@pytest.mark.parametrize("method", ["efbig", "enospc"])
def test_full_disk_says_could_not_save_and_keeps_the_chat(tmp_path: Path, method: str) -> None:
    require_model()
    from gradio_client import Client

    cfg = write_config(tmp_path / "config.yaml", max_tokens=12)
    with data_volume(tmp_path, method) as data:
        server = ServerProcess(data, config=cfg, log_path=tmp_path / "server.log").start()
        assert server.proc is not None
        disk = FullDisk(method, data, server.proc.pid)
        with artifacts_on_failure(f"test_faults-full-disk-{method}", server):
            try:
                first = chat(server, "First question: what is 1+1?", session_id="new")
                assert first.status_code == 200 and first.json()["warnings"] == [], first.text
                sid = first.json()["session_id"]
                on_disk = httpx.get(f"{server.url}/api/sessions/{sid}").content
                ui = Client(server.url, verbose=False)
                disk.fill()

                # API, streaming: the reply arrives whole, and the done event says it was not saved
                out: dict[str, Any] = {}
                body = {"messages": [{"role": "user", "content": "Second: and 2+2?"}], "session_id": sid}
                stream_turn(server.url, body, out)
                assert out.get("status") == 200 and "done" in out, out
                assert "".join(out["deltas"]).strip(), "no reply while the disk was full"
                warnings = out["done"].get("warnings") or []
                assert any("Could not save" in w for w in warnings), out["done"]
                # API, whole reply: the same signal
                r = chat(server, "Third: and 3+3?", session_id=sid)
                assert r.status_code == 200, r.text
                assert r.json()["reply"].strip() and any("Could not save" in w for w in r.json()["warnings"])
                # the stored chat is untouched: not torn, not shortened
                assert httpx.get(f"{server.url}/api/sessions/{sid}").content == on_disk

                # UI (the Gradio path): the turn shows, and the next turn still shows it (kept in memory)
                view, status = _gradio_send(ui, "UI one: name a fruit.", sid)
                assert _texts(view)[-2] == "UI one: name a fruit." and _texts(view)[-1].strip(), view
                view, status = _gradio_send(ui, "UI two: name a tree.", sid)
                texts = _texts(view)
                assert "UI one: name a fruit." in texts and texts[-2] == "UI two: name a tree.", texts
                assert httpx.get(f"{server.url}/api/sessions/{sid}").content == on_disk

                disk.free()
                view, _ = _gradio_send(ui, "UI three: name a river.", sid)
                saved = [m["content"] for m in stored(server, sid)["messages"]]
                for text in (
                    "First question: what is 1+1?",
                    "UI one: name a fruit.",
                    "UI three: name a river.",
                ):
                    assert text in saved, (
                        f"{text!r} missing from the saved chat once the disk had room: {saved}"
                    )
                check_data_dir(data)
                assert not list((data / "sessions").glob(".*.tmp")), "a failed write left a temp file"
                assert server.proc is not None and server.proc.poll() is None, "the server died"
            finally:
                with contextlib.suppress(Exception):
                    disk.free()
                server.stop()


# --- client goes away ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(tmp_path_factory.mktemp("faults-long"), max_tokens=400)
    yield s
    s.stop()


def _first_delta_s(server: ServerProcess, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    first = None
    done: dict[str, Any] = {}
    with httpx.Client(timeout=60) as c, c.stream("POST", server.url + "/api/chat/stream", json=body) as r:
        for _, data in sse_events(r):
            if "delta" in data and first is None:
                first = time.monotonic() - started
            if data.get("done"):
                done = data
    assert first is not None, "no delta arrived"
    return first, done


def test_client_disconnect_frees_the_model_and_saves_the_partial(long_server: ServerProcess) -> None:
    server = long_server
    with artifacts_on_failure("test_faults-disconnect", server):
        quick = {"messages": [{"role": "user", "content": "Say OK."}], "params": {"max_tokens": 4}}
        baseline, _ = _first_delta_s(server, quick)
        sid = chat(server, "Hello.", session_id="new", params={"max_tokens": 8}).json()["session_id"]
        long = {
            "messages": [{"role": "user", "content": "Count from 1 to 1000, one per line."}],
            "session_id": sid,
        }
        got = ""
        with httpx.Client(timeout=60) as c, c.stream("POST", server.url + "/api/chat/stream", json=long) as r:
            for _, data in sse_events(r):
                got += data.get("delta", "")
                if len(got) >= 12:
                    break  # leaving the block closes the connection mid-reply
        went_away = time.monotonic()
        first, done = _first_delta_s(server, quick)
        waited = done["metrics"]["queue_ms"]
        print(
            f"\nafter a disconnect: first token in {first:.2f} s (alone {baseline:.2f} s), queued {waited} ms"
        )
        assert waited < 1500, f"the next request waited {waited} ms for the model: the dropped stream kept it"
        assert first < baseline + 3.0, f"next first token took {first:.2f} s vs {baseline:.2f} s alone"
        assert time.monotonic() - went_away < 20

        def partial_saved() -> dict[str, Any] | None:
            last = stored(server, sid)["messages"][-1]
            return last if last["role"] == "assistant" and last["stopped"] and last["content"] else None

        deadline = time.monotonic() + 10
        last = partial_saved()
        while last is None and time.monotonic() < deadline:
            time.sleep(0.2)
            last = partial_saved()
        assert last is not None, stored(server, sid)["messages"]
        assert last["content"].startswith(got), (got, last["content"])
        assert len(last["content"]) < 1500, "the reply ran on after the client left"
        assert httpx.get(server.url + "/api/health").json()["queue"] == 0


# --- bad model at start -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_model_at_start_server_runs_degraded(tmp_path: Path, kind: str) -> None:
    from gradio_client import Client

    model = tmp_path / "broken-model.gguf"
    if kind == "corrupt":
        model.write_bytes(b"GGUF\x03\x00\x00\x00" + random.Random(1).randbytes(64 * 1024))
    cfg = write_config(tmp_path / "config.yaml")
    server = ServerProcess(tmp_path / "data", config=cfg, model=model, log_path=tmp_path / "server.log")
    server.start()
    try:
        with artifacts_on_failure(f"test_faults-bad-model-{kind}", server):
            health = httpx.get(server.url + "/api/health").json()
            assert health["status"] == "degraded", health
            err = health["model"]["error"]
            assert health["model"]["loaded"] is False and "broken-model.gguf" in err, health
            assert ("not found" in err) if kind == "missing" else ("Could not load" in err), err

            for path, body in (
                ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
                ("/api/chat/stream", {"messages": [{"role": "user", "content": "hi"}], "session_id": "new"}),
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
            ):
                r = httpx.post(server.url + path, json=body, timeout=30)
                assert r.status_code == 503, (path, r.status_code, r.text)
                e = r.json()["error"]
                assert e["type"] == "model_unavailable" and "broken-model.gguf" in e["message"], (path, e)
                assert "Traceback" not in r.text
            assert httpx.get(server.url + "/api/sessions").json() == [], "a failed chat created a session"

            ui = Client(server.url, verbose=False)
            _view, _sid, status = ui.predict("__custom__", None, api_name="/on_new")
            assert "No model loaded" in status and "broken-model.gguf" in status, status
    finally:
        server.stop()


# --- model switch fails ---------------------------------------------------------------------------------


def test_failed_model_switch_keeps_the_old_model(tmp_path: Path) -> None:
    require_model()
    models = tmp_path / "models"
    models.mkdir()
    (models / "corrupt.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + random.Random(2).randbytes(32 * 1024))
    (models / "empty.gguf").write_bytes(b"")
    (models / "notes.txt").write_text("not a model")
    shutil.copy(Path(__file__), models / "script.gguf")
    server = start_server(tmp_path, extra_config=f"models_dir: {models}\n", model=MODEL)
    try:
        with artifacts_on_failure("test_faults-switch", server):
            before = httpx.get(server.url + "/api/health").json()
            assert before["status"] == "ok"
            cases = {
                "corrupt.gguf": "corrupt.gguf",
                "empty.gguf": "empty.gguf",
                "script.gguf": "script.gguf",
                "notes.txt": "not a .gguf",
                "missing.gguf": "not found",
                "../../../etc/passwd": "models folder",
            }
            for path, says in cases.items():
                r = httpx.post(server.url + "/api/models/load", json={"path": path}, timeout=120)
                assert 400 <= r.status_code < 600, (path, r.status_code, r.text)
                e = r.json()["error"]
                assert says in e["message"], (path, e)
                assert "Traceback" not in r.text
            after = httpx.get(server.url + "/api/health").json()
            assert after["status"] == "ok" and after["model"] == before["model"], (
                before["model"],
                after["model"],
            )
            r = chat(server, "Still there? Say yes.")
            assert r.status_code == 200 and r.json()["reply"].strip(), r.text
    finally:
        server.stop()
