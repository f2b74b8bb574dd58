"""Every way into a turn over HTTP builds one prompt: /api/chat without a session, with session "new",
/api/chat/stream and /v1/chat/completions send the model the same messages, byte for byte, for the same
conversation and preset. And the API's error paths, checked before any stream starts. The whole app
(create_app) runs in process on a scripted backend; the real-model HTTP tests are test_http and
test_openai_api."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from engine import Runtime
from tests.scripted import ScriptedBackend, scripted_client, scripted_runtime

CHAT = [
    {"role": "system", "content": "Keep it short."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi! What do you need?"},
    {"role": "user", "content": "Tell me about green tea."},
]


@pytest.fixture(scope="module")
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, backend: ScriptedBackend
) -> Iterator[tuple[TestClient, Runtime]]:
    rt = scripted_runtime(tmp_path_factory.mktemp("turn_http") / "data", backend, chat={"user_name": "Aiko"})
    with scripted_client(rt) as client:
        yield client, rt


def sse_events(body: bytes) -> list[dict]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


def test_one_prompt_from_every_route(app: tuple[TestClient, Runtime], backend: ScriptedBackend) -> None:
    client, _rt = app
    backend.prompts.clear()
    for route, body in (
        ("/api/chat", {"messages": CHAT, "preset": "friendly"}),
        ("/api/chat", {"messages": CHAT, "preset": "friendly", "session_id": "new"}),
        ("/api/chat/stream", {"messages": CHAT, "preset": "friendly"}),
        ("/v1/chat/completions", {"model": "x", "messages": CHAT, "preset": "friendly"}),
    ):
        r = client.post(route, json=body)
        assert r.status_code == 200, (route, r.text)
    first = backend.prompts[0]
    assert all(p == first for p in backend.prompts), backend.prompts
    assert len(backend.prompts) == 4
    assert first[0]["role"] == "system" and first[0]["content"].startswith("Keep it short.")
    assert [m["content"] for m in first[1:]] == [m["content"] for m in CHAT[1:]]


def test_user_macro_is_the_chat_user_everywhere(
    app: tuple[TestClient, Runtime], backend: ScriptedBackend
) -> None:
    client, rt = app
    rt.presets.save(
        rt.presets.get("friendly").model_copy(update={"name": "host", "system_prompt": "Greet {{user}}."})
    )
    backend.prompts.clear()
    plain = [{"role": "user", "content": "Hi"}]
    assert client.post("/api/chat", json={"messages": plain, "preset": "host"}).status_code == 200
    assert client.post("/v1/chat/completions", json={"messages": plain, "preset": "host"}).status_code == 200
    assert [p[0]["content"].split("\n")[0] for p in backend.prompts] == ["Greet Aiko."] * 2


@pytest.mark.parametrize(
    ("route", "body", "status", "says"),
    [
        ("/api/chat", {"messages": CHAT, "preset": "nobody"}, 404, "nobody"),
        ("/api/chat/stream", {"messages": CHAT, "params": {"temperature": 7}}, 400, "temperature"),
        (
            "/api/chat/stream",
            {"messages": [{"role": "assistant", "content": "x"}], "session_id": "new"},
            400,
            "user",
        ),
        ("/api/chat", {"messages": CHAT, "session_id": "s-20990101-000000-abcdef"}, 404, "no chat"),
        ("/api/chat/stream", {"messages": CHAT, "persona": "ghost"}, 404, "ghost"),
        ("/v1/chat/completions", {"messages": [{"role": "system", "content": "x"}]}, 400, "user"),
    ],
)
def test_a_bad_request_is_an_error_before_any_stream(
    app: tuple[TestClient, Runtime], route: str, body: dict, status: int, says: str
) -> None:
    client, rt = app
    before = len(rt.sessions.list())
    r = client.post(route, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert says in r.json()["error"]["message"].lower()
    assert len(rt.sessions.list()) == before  # nothing was saved


def test_regenerate_over_sse_keeps_both_replies(
    app: tuple[TestClient, Runtime], backend: ScriptedBackend
) -> None:
    client, rt = app
    backend.enqueue("First.")
    sid = client.post("/api/chat", json={"messages": CHAT[1:2], "session_id": "new"}).json()["session_id"]
    backend.enqueue("Second", " try.")
    r = client.post(f"/api/sessions/{sid}/regenerate", json={})
    events = sse_events(r.content)
    assert "".join(e.get("delta", "") for e in events) == "Second try."
    assert events[-1]["done"] and events[-1]["session_id"] == sid
    reply = rt.sessions.get(sid).messages[-1]
    assert [a.content for a in reply.alternatives] == ["First.", "Second try."]


def test_an_unexpected_error_in_a_stream_is_logged_with_its_traceback(
    app: tuple[TestClient, Runtime], backend: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, rt = app

    def broken(*_a: object, **_k: object) -> Iterator[object]:
        raise ZeroDivisionError("a bug")
        yield  # pragma: no cover

    monkeypatch.setattr(backend, "stream", broken)
    r = client.post("/api/chat/stream", json={"messages": CHAT[1:2]})
    assert b"event: error" in r.content and b"ZeroDivisionError" not in r.content
    log = (Path(rt.data_dir) / "logs" / "engine.log").read_text()
    assert "ZeroDivisionError: a bug" in log and "Traceback" in log
