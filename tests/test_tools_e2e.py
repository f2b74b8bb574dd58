"""Tool calling end to end: the real server (`python -m webui`) on the default model (SmolLM2 135M), with the
SDK-written echo MCP server and a config typo in config/mcp.json, as a user sets them up.

- REST: the model is made to call add(a, b) (tool_choice names it); the grammar gives arguments that
  validate against the schema; the server runs it; the result enters the chat and the session file; the
  model answers. Without tool_approval the API never waits: the call is refused and the model reads why.
  A server that crashes mid-call gives a clear result and the chat goes on.
- /v1 with the official `openai` SDK: tools -> tool_calls (whole and streamed) -> a tool message -> answer;
  /v1 never runs the tools itself.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.helpers import GREEDY, ROOT, ServerProcess, assert_no_traceback, server_fixture

pytestmark = pytest.mark.slow

ECHO = str(ROOT / "tests" / "mcp_servers" / "echo_server.py")
ASK = [{"role": "user", "content": "What is 2 plus 3?"}]
ADD = {"type": "function", "function": {"name": "add"}}
PARAMS = {**GREEDY, "max_tokens": 40}
ADD_SPEC = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("mcp") / "mcp.json"
    servers = {
        "echo": {"command": sys.executable, "args": [ECHO]},
        "typo": {"comand": sys.executable, "args": [ECHO]},
    }
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    env = {
        "LLM_TOOLS__MCP_CONFIG": str(config),
        "LLM_TOOLS__MAX_ROUNDS": "2",  # the forced call, then the answer: a short test
        "LLM_MODEL__N_CTX": "2048",
    }
    yield from server_fixture(tmp_path_factory, "tools", model_path, env=env)


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(timeout=180) as c:
        deadline = time.monotonic() + 60
        while not any(t["name"] == "add" for t in c.get("/api/tools").json()):
            assert time.monotonic() < deadline, c.get("/api/tools/servers").json()
            time.sleep(0.2)
        yield c


def sse_events(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]


def test_the_default_model_calls_add_and_answers_with_the_result(http: httpx.Client) -> None:
    body = {
        "messages": ASK,
        "session_id": "new",
        "params": PARAMS,
        "tools": ["add"],
        "tool_choice": ADD,
        "tool_approval": "auto",
    }
    with http.stream("POST", "/api/chat/stream", json=body) as resp:
        assert resp.status_code == 200
        events = sse_events(resp)
    calls = [e["tool_call"] for e in events if "tool_call" in e]
    results = [e["tool_result"] for e in events if "tool_result" in e]
    assert len(calls) == 1 and calls[0]["name"] == "add", events
    jsonschema.validate(calls[0]["arguments"], ADD_SPEC["function"]["parameters"])  # type: ignore[index]
    args = calls[0]["arguments"]
    assert results == [
        {
            "id": calls[0]["id"],
            "content": str(args["a"] + args["b"]),
            "is_error": False,
            "ms": results[0]["ms"],
        }
    ]
    answer = "".join(e.get("delta", "") for e in events)
    done = events[-1]
    assert done.get("done") and answer.strip(), events  # the model answers after the result
    assert "{" not in answer[:1]  # the call's JSON is not shown as the answer
    saved = http.get(f"/api/sessions/{done['session_id']}").json()
    msgs = saved["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1]["tool_calls"][0]["id"] == calls[0]["id"]
    assert msgs[2]["tool_call_id"] == calls[0]["id"] and msgs[2]["content"] == results[0]["content"]
    assert msgs[3]["content"] == answer


def test_the_api_never_waits_for_approval(http: httpx.Client) -> None:
    body = {"messages": ASK, "params": PARAMS, "tools": ["add"], "tool_choice": ADD}
    started = time.monotonic()
    r = http.post("/api/chat", json=body)  # tools.approval is "ask": nobody to ask
    assert r.status_code == 200, r.text
    out = r.json()
    assert time.monotonic() - started < 120
    (call,) = out["tool_calls"]
    assert call["name"] == "add" and call["result"]["is_error"]
    assert "did not run" in call["result"]["content"]
    assert out["reply"].strip() and out["finish_reason"] in ("stop", "length")


def test_a_crash_mid_call_and_a_config_typo_leave_the_chat_working(http: httpx.Client) -> None:
    status = http.get("/api/tools/servers").json()
    typo = next(s for s in status["servers"] if s["name"] == "typo")
    assert typo["state"] == "error" and "comand" in typo["error"]
    crash = {"type": "function", "function": {"name": "crash"}}
    body = {"messages": ASK, "params": PARAMS, "tools": "auto", "tool_choice": crash, "tool_approval": "auto"}
    out = http.post("/api/chat", json=body).json()
    (call,) = out["tool_calls"]
    assert call["name"] == "crash" and call["result"]["is_error"] and call["result"]["content"]
    assert_no_traceback(call["result"]["content"])
    again = http.post("/api/chat", json={**body, "tool_choice": ADD}).json()  # the server is back
    result = again["tool_calls"][0]["result"]
    assert not result["is_error"] and result["content"].isdigit(), again
    assert again["reply"].strip()


def test_bad_tool_fields_are_400s(http: httpx.Client) -> None:
    r = http.post("/api/chat", json={"messages": ASK, "tools": ["nope"]})
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    r = http.post(
        "/api/chat",
        json={
            "messages": ASK,
            "tools": ["add"],
            "tool_choice": {"type": "function", "function": {"name": "echo"}},
        },
    )
    assert r.status_code == 400 and "echo" in r.json()["error"]["message"]


# --- /v1 with the official SDK ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=180) as c:
        yield c


def test_the_sdk_round_trips_tools_calls_and_results(client: openai.OpenAI) -> None:
    model = client.models.list().data[0].id
    messages: list[Any] = [{"role": "user", "content": "What is 2 plus 3?"}]
    kw: dict[str, Any] = {"model": model, "temperature": 0, "seed": 42, "max_tokens": 40}
    out = client.chat.completions.create(
        messages=messages,
        tools=[ADD_SPEC],
        tool_choice={"type": "function", "function": {"name": "add"}},
        **kw,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "add"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, ADD_SPEC["function"]["parameters"])  # type: ignore[index]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": str(args["a"] + args["b"])},
    ]
    answer = client.chat.completions.create(messages=messages, tools=[ADD_SPEC], tool_choice="none", **kw)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert (answer.choices[0].message.content or "").strip()
    assert not answer.choices[0].message.tool_calls


def test_streamed_tool_calls_arrive_as_deltas(client: openai.OpenAI) -> None:
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=[ADD_SPEC],
        tool_choice="required",
        stream=True,
        temperature=0,
        max_tokens=40,
    )
    parts, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            parts += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert parts and parts[0].function and parts[0].function.name == "add" and parts[0].id
    json.loads("".join(p.function.arguments or "" for p in parts if p.function))
