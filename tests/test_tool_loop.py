"""The tool loop (engine/tools/loop.py) through `Runtime.turn`, on a scripted model and the real echo MCP
server (tests/mcp_servers/echo_server.py over stdio, started as a user's config starts it): calls parsed
from the reply, approval (auto, a list, a person's answer, refusal without one), results given back,
rounds limited, sessions keeping calls and results as messages, faults as readable results."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Delta,
    Finished,
    InvalidInput,
    Runtime,
    ToolCall,
    ToolResult,
)
from tests.helpers import ROOT
from tests.scripted import ScriptedBackend, scripted_runtime

pytestmark = pytest.mark.slow  # an MCP server process starts once for the module

ECHO = str(ROOT / "tests" / "mcp_servers" / "echo_server.py")
ASK = [{"role": "user", "content": "What is 2 plus 3?"}]
ADD_CALL = '{"name": "add", "arguments": {"a": 2, "b": 3}}'


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "mcp.json"
    servers = {
        "echo": {"command": sys.executable, "args": [ECHO]},
        "typo": {"comand": sys.executable, "args": [ECHO]},
    }
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shared(
    config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Runtime, ScriptedBackend]]:
    backend = ScriptedBackend()
    rt = scripted_runtime(
        tmp_path_factory.mktemp("data"),
        backend,
        tools={"mcp_config": str(config), "call_timeout_s": 3, "max_result_chars": 2000},
    )
    assert rt.tools.wait_ready(60), rt.tools.servers()
    try:
        yield rt, backend
    finally:
        rt.close()


@pytest.fixture
def rt(shared: tuple[Runtime, ScriptedBackend]) -> Runtime:
    shared[1].script.clear()
    shared[1].prompts.clear()
    shared[1].tools.clear()
    shared[1].labels.clear()
    return shared[0]


@pytest.fixture
def backend(shared: tuple[Runtime, ScriptedBackend]) -> ScriptedBackend:
    return shared[1]


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events if not isinstance(e, Delta)]


def test_a_call_runs_and_its_result_goes_back_to_the_model(rt: Runtime, backend: ScriptedBackend) -> None:
    backend.enqueue('{"name": "add", ', '"arguments": {"a": 2, "b": 3}}')
    backend.enqueue("2 plus 3 is 5.")
    turn = rt.turn(
        ASK, tools="auto", tool_choice={"type": "function", "function": {"name": "add"}}, tool_approval="auto"
    )
    events = list(turn)
    assert kinds(events) == ["ToolCall", "ToolResult", "Finished"]
    call, result = events[0], events[1]
    assert isinstance(call, ToolCall) and (call.name, call.arguments) == ("add", {"a": 2, "b": 3})
    assert isinstance(result, ToolResult) and (result.id, result.content, result.is_error) == (
        call.id,
        "5",
        False,
    )
    assert turn.text() == "2 plus 3 is 5."  # the call's JSON is never shown as text
    assert turn.tool_calls == [
        {
            "id": call.id,
            "name": "add",
            "arguments": {"a": 2, "b": 3},
            "result": {"content": "5", "is_error": False, "ms": result.ms},
        }
    ]
    first, second = backend.tools
    names = [t["function"]["name"] for t in first["tools"]]
    assert {"add", "echo", "crash", "hang", "big"} <= set(names)
    assert first["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert second["tool_choice"] == "auto"  # a forced choice holds for the first round only
    assert backend.prompts[1][-2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "name": "add", "content": "5"},
    ]


def test_the_api_never_waits_a_call_that_needs_asking_is_refused(
    rt: Runtime, backend: ScriptedBackend
) -> None:
    backend.enqueue(ADD_CALL)
    backend.enqueue("I could not add them.")
    events = list(rt.turn(ASK, tools=["add"]))  # tools.approval defaults to ask; no one to ask
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.is_error and "'add'" in result.content and "did not run" in result.content.lower()
    assert backend.prompts[1][-1]["content"] == result.content  # the model reads the refusal
    backend.enqueue(ADD_CALL)
    backend.enqueue("ok")
    events = list(rt.turn(ASK, tools=["add"], tool_approval=["add"]))  # a list runs unasked
    assert next(e for e in events if isinstance(e, ToolResult)).content == "5"


def test_a_person_is_asked_once_per_tool_deny_and_always_hold_for_the_turn(
    rt: Runtime, backend: ScriptedBackend
) -> None:
    asked: list[str] = []
    answers: list[Any] = []

    def approve(call: ToolCall) -> Any:
        asked.append(f"{call.name}{call.arguments}")
        return answers.pop(0)

    for answer in ("deny", "always"):
        answers.append(answer)
        asked.clear()
        for _ in range(3):
            backend.enqueue(ADD_CALL)
        backend.enqueue("done")
        turn = rt.turn(ASK, tools="auto", tool_approval="ask", approve=approve)
        results = [e for e in turn if isinstance(e, ToolResult)]
        assert len(asked) == 1  # the later calls are not asked about again
        assert [r.is_error for r in results] == [answer == "deny"] * 3
        if answer == "deny":
            assert all("The user did not allow" in r.content for r in results)


def test_rounds_are_limited_and_the_last_one_offers_no_tools(rt: Runtime, backend: ScriptedBackend) -> None:
    rt.settings.tools.max_rounds = 3
    try:
        for _ in range(5):
            backend.enqueue(ADD_CALL)
        turn = rt.turn(ASK, tools="auto", tool_approval="auto")
        events = list(turn)
    finally:
        rt.settings.tools.max_rounds = 5
    assert kinds(events).count("ToolCall") == 2
    assert [t.get("tool_choice") for t in backend.tools] == ["auto", "auto", None]
    assert "tools" not in backend.tools[-1]
    assert turn.text() == ADD_CALL  # with no tools offered, the text is text


def test_faults_come_back_as_results_and_the_chat_goes_on(rt: Runtime, backend: ScriptedBackend) -> None:
    calls = [
        '{"name": "hang", "arguments": {"seconds": 60}}',
        '{"name": "big", "arguments": {"size": 1000000}}',
        '{"name": "nosuch", "arguments": {}}',
        '{"name": "add", "arguments": {"a": 2',
    ]
    for text in calls:
        backend.enqueue(text)
        backend.enqueue("Sorry, that did not work.")
    out = []
    for _ in calls:
        turn = rt.turn(ASK, tools="auto", tool_approval="auto")
        events = list(turn)
        assert turn.text() == "Sorry, that did not work."
        out.append(next(e for e in events if isinstance(e, ToolResult)))
    hang, big, nosuch, broken = out
    assert hang.is_error and "did not answer within 3 s" in hang.content
    assert len(big.content) < 2200 and "truncated" in big.content
    assert nosuch.is_error and "no tool named 'nosuch'" in nosuch.content
    assert broken.is_error and "could not be read" in broken.content


def test_a_crashing_server_gives_a_clear_result_and_comes_back(rt: Runtime, backend: ScriptedBackend) -> None:
    backend.enqueue('{"name": "crash", "arguments": {}}')
    backend.enqueue("It crashed.")
    turn = rt.turn(ASK, tools="auto", tool_approval="auto")
    result = next(e for e in list(turn) if isinstance(e, ToolResult))
    assert result.is_error and result.content
    assert turn.text() == "It crashed."
    backend.enqueue(ADD_CALL)
    backend.enqueue("5")
    turn = rt.turn(ASK, tools=["add"], tool_approval="auto")  # the restarted server answers again
    assert next(e for e in turn if isinstance(e, ToolResult)).content == "5"


def test_bad_tool_requests_are_refused_before_the_turn(rt: Runtime) -> None:
    with pytest.raises(InvalidInput, match="No enabled tool is named 'nope'"):
        rt.turn(ASK, tools=["nope"])
    with pytest.raises(InvalidInput, match="tool_choice names 'echo'"):
        rt.turn(ASK, tools=["add"], tool_choice={"type": "function", "function": {"name": "echo"}})
    with pytest.raises(InvalidInput, match="tool_choice must be"):
        rt.turn(ASK, tools="auto", tool_choice="sometimes")
    with pytest.raises(InvalidInput, match="tool_approval"):
        rt.turn(ASK, tools="auto", tool_approval="maybe")
    with pytest.raises(InvalidInput, match="tools must be"):
        rt.turn(ASK, tools="all")


def test_caller_run_tools_end_the_turn_at_the_calls(rt: Runtime, backend: ScriptedBackend) -> None:
    spec = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    backend.enqueue('{"name": "lookup", "arguments": {"q": "x"}}')
    turn = rt.turn(ASK, tools=[spec], tool_choice="required")
    events = list(turn)
    assert kinds(events) == ["ToolCall", "Finished"]
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "tool_calls"
    assert len(backend.prompts) == 1  # nothing ran here
    call = events[0]
    assert isinstance(call, ToolCall)
    backend.enqueue("It is x.")
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call_openai(call)]},
        {"role": "tool", "tool_call_id": call.id, "content": "x"},
    ]
    assert rt.turn(history, tools=[spec]).text() == "It is x."
    assert backend.prompts[-1][-1] == {"role": "tool", "tool_call_id": call.id, "content": "x"}


def call_openai(call: ToolCall) -> dict[str, Any]:
    return call.to_openai()


def test_a_session_keeps_calls_and_results_as_messages(rt: Runtime, backend: ScriptedBackend) -> None:
    backend.enqueue(ADD_CALL)
    backend.enqueue("It is 5.")
    turn = rt.turn(ASK, session="new", tools=["add"], tool_approval="auto")
    assert turn.text() == "It is 5."
    saved = rt.sessions.get(turn.session_id or "")
    roles = [m.role for m in saved.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    caller, result, answer = saved.messages[1:]
    assert caller.tool_calls and caller.tool_calls[0]["function"]["name"] == "add"
    assert (result.tool_call_id, result.name, result.content) == (caller.tool_calls[0]["id"], "add", "5")
    assert answer.content == "It is 5." and answer.metrics
    assert caller.to_openai()["tool_calls"] == caller.tool_calls
    assert backend.labels == [saved.id, saved.id]  # both rounds name the chat (its KV slot shows it)
    backend.enqueue("Yes.")
    rt.turn(session=saved.id, user_text="Sure?").text()
    sent = backend.prompts[-1]
    assert [m["role"] for m in sent[-5:]] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[-4]["tool_calls"] == caller.tool_calls  # the next turn's prompt has them too
    assert "Tool add" in rt.sessions.to_markdown(rt.sessions.get(saved.id))


def test_a_group_chat_keeps_the_speaker_and_the_tool_messages_in_its_history(
    rt: Runtime, backend: ScriptedBackend
) -> None:
    backend.enqueue(ADD_CALL)
    backend.enqueue("It is 5.")
    turn = rt.turn(
        ASK, session="new", characters=["friendly", "teacher"], tools=["add"], tool_approval="auto"
    )
    assert turn.text() == "It is 5."
    saved = rt.sessions.get(turn.session_id or "")
    caller, result, answer = saved.messages[1:]
    assert (caller.role, result.role, answer.role) == ("assistant", "tool", "assistant")
    assert caller.name == answer.name and caller.name  # the same member spoke before and after the call
    assert result.name == "add" and result.content == "5"
    backend.enqueue("Yes.")
    rt.turn(session=saved.id, user_text="Sure?").text()
    sent = backend.prompts[-1]
    tool = next(m for m in sent if m["role"] == "tool")
    assert tool["content"] == "5" and tool.get("tool_call_id") == caller.tool_calls[0]["id"]  # type: ignore[index]
    assert any(m.get("tool_calls") for m in sent if m["role"] == "assistant")
