"""The chat tab's tool pieces without a browser: rows for calls and results, the approval hand-off between
the turn's thread and the page, and what a turn is given."""

from __future__ import annotations

import threading
import time

from engine import ToolCall, ToolResult
from engine.session_formats import ChatMessage
from webui.tabs.chat import chatbot_rows, to_chatbot
from webui.tabs.chat_tools import Asking, LiveCall, ToolChoices, _fence, call_row, live_rows, track

CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}


def _chat() -> list[ChatMessage]:
    return [
        ChatMessage(role="user", content="2+3?"),
        ChatMessage(role="assistant", content="", tool_calls=[CALL]),
        ChatMessage(role="tool", content="5", tool_call_id="c1", name="add", metrics={"ms": 12.0}),
        ChatMessage(role="assistant", content="It is 5."),
    ]


def test_a_call_is_one_row_with_its_result_and_only_text_rows_are_editable() -> None:
    messages = _chat()
    rows = chatbot_rows(messages)
    assert [(m.role, kind) for m, kind in rows] == [("user", ""), ("assistant", 1), ("assistant", "")]
    view = to_chatbot(messages)
    block = view[1]
    assert block["metadata"]["title"] == "🛠 add · done" and block["metadata"]["duration"] == 0.01
    assert '"a": 2' in block["content"] and "5" in block["content"]
    assert view[2]["content"] == "It is 5."


def test_a_result_cannot_break_out_of_its_code_block() -> None:
    text = "```\n# not a heading\n```"
    fenced = _fence(text)
    assert fenced.startswith("````\n") and fenced.endswith("\n````")
    row = call_row(CALL, ToolResult("c1", "<b>x</b>", is_error=True), None)
    assert "failed" in row["metadata"]["title"] and "<b>x</b>" in row["content"]


def test_live_calls_show_until_the_session_holds_them_and_the_prompt_has_three_answers() -> None:
    live: dict[str, LiveCall] = {}
    call = ToolCall("c9", "echo", {"text": "hi"})
    assert track(live, call) and track(live, Asking(call))
    assert not track(live, "text")
    session = type("S", (), {"messages": _chat()})()
    rows = live_rows(session, live, "ja")  # type: ignore[arg-type]
    assert [o["value"] for o in rows[0]["options"]] == ["allow", "always", "deny"]
    assert track(live, ToolResult("c9", "hi", ms=3.0))
    assert "options" not in live_rows(session, live, None)[0]
    session.messages[1].tool_calls = [CALL, {**CALL, "id": "c9"}]
    assert live_rows(session, live, None) == []  # the session has it now


def test_an_answer_reaches_the_waiting_turn_and_stop_denies() -> None:
    choices = ToolChoices()
    cancel = threading.Event()
    got: list[str] = []
    call = ToolCall("c1", "add", {})
    t = threading.Thread(target=lambda: got.append(choices.ask("tab", call, cancel)))
    t.start()
    deadline = time.monotonic() + 5
    while not choices.answer("tab", "always"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t.join(5)
    assert got == ["always"] and choices.always["tab"] == {"add"}
    assert not choices.answer("tab", "allow")  # nothing waits now
    cancel.set()
    assert choices.ask("tab", ToolCall("c2", "add", {}), cancel) == "deny"
