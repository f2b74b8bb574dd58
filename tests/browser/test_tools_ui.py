"""MCP tools in a real Chromium against the real server and a real MCP server (tests/mcp_servers):
the Tools tab lists the servers and tools and turns one off; in the chat, a call asks for approval under
the chat: Deny, then Allow always, and the calls show as blocks with their arguments and results."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.harness import ServerProcess, start_server
from tests.browser.ui import ChatPage
from tests.helpers import ROOT

ECHO = str(ROOT / "tests" / "mcp_servers" / "echo_server.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("tools-ui")
    config = base / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [ECHO]}}}))
    s = start_server(base, env={"LLM_TOOLS__MCP_CONFIG": str(config)})
    yield s
    s.stop()


def _session(chat: ChatPage) -> dict[str, Any]:
    sid = chat.session_id()
    assert sid
    resp = chat.api("GET", f"/api/sessions/{sid}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _finished_turn(chat: ChatPage, text: str) -> list[dict[str, Any]]:
    """The turn that answers `text`, once it is stored complete and the page is idle (the page may not be
    busy yet just after Enter, so idle alone proves nothing)."""

    def done() -> list[dict[str, Any]] | None:
        if chat.busy() or not chat.session_id():
            return None
        msgs = _session(chat)["messages"]
        users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
        if not users or msgs[users[-1]]["content"] != text:
            return None
        turn = msgs[users[-1] + 1 :]
        final = turn[-1] if turn else {}
        return turn if final.get("role") == "assistant" and final.get("metrics") else None

    return list(chat.wait_for(done, f"the stored turn answering {text!r}"))


def _options(chat: ChatPage) -> list[str]:
    return [t.strip() for t in chat.page.locator("#chatbot .option").all_inner_texts()]


def _choose_tool(chat: ChatPage, label: str) -> None:
    chat.page.locator("#chat-tools").get_by_text("Tools", exact=True).first.click()
    box = chat.page.locator("#tool-mode input")
    box.click()
    chat.page.get_by_role("option", name=label).click()
    chat.wait_for(lambda: box.input_value() == label, f"the tool choice {label!r}")


def _answer(chat: ChatPage, label: str) -> None:
    chat.wait_for(lambda: label in _options(chat), f"the approval prompt with {label!r}")
    chat.page.locator("#chatbot .option", has_text=label).first.click()


def test_the_tools_tab_lists_servers_and_turns_a_tool_off(chat: ChatPage) -> None:
    chat.open_tab("Tools")
    servers = chat.page.locator("#tools-servers")
    chat.wait_for(lambda: "echo" in servers.inner_text() and "ready" in servers.inner_text(), "the server")
    tools = chat.page.locator("#tools-list")
    chat.wait_for(lambda: "add · echo" in tools.inner_text(), "the tool list")
    tools.get_by_label("crash · echo", exact=False).uncheck()
    chat.wait_for(
        lambda: not next(t for t in chat.api("GET", "/api/tools").json() if t["name"] == "crash")["enabled"],
        "crash turned off",
    )
    tools.get_by_label("crash · echo", exact=False).check()
    chat.wait_for(
        lambda: next(t for t in chat.api("GET", "/api/tools").json() if t["name"] == "crash")["enabled"],
        "crash turned on again",
    )


def test_a_call_asks_deny_then_allow_always(chat: ChatPage) -> None:
    _choose_tool(chat, "Always call add")
    chat.type_and_enter("What is 2 plus 3? Use the add tool.")
    _answer(chat, "Deny")
    _finished_turn(chat, "What is 2 plus 3? Use the add tool.")
    doc = _session(chat)
    tool = next(m for m in doc["messages"] if m["role"] == "tool")
    assert "did not allow" in tool["content"] and tool["metrics"]["is_error"] is True
    call = next(m for m in doc["messages"] if m.get("tool_calls"))["tool_calls"][0]
    assert call["function"]["name"] == "add"
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args["a"], int) and isinstance(args["b"], int)  # the grammar kept to the schema

    chat.type_and_enter("Again, please.")
    _answer(chat, "Allow always")
    turn = _finished_turn(chat, "Again, please.")
    call, result = turn[0]["tool_calls"][0], turn[1]
    a = json.loads(call["function"]["arguments"])
    assert result["metrics"]["is_error"] is False
    assert result["content"].strip() == str(a["a"] + a["b"])  # the server really ran it

    # Allow always: the next call runs without asking
    chat.type_and_enter("And once more.")
    turn = _finished_turn(chat, "And once more.")
    assert turn[1]["role"] == "tool" and turn[1]["metrics"]["is_error"] is False
    assert "Deny" not in _options(chat)
    blocks = chat.page.locator("#chatbot").inner_text()
    assert "🛠 add · failed" in blocks and "🛠 add · done" in blocks  # collapsed: title and outcome
    chat.page.locator("#chatbot").get_by_text("🛠 add · done").last.click()
    chat.wait_for(lambda: "Arguments" in chat.page.locator("#chatbot").inner_text(), "an opened block")


def test_calls_show_in_a_reopened_chat(chat: ChatPage) -> None:
    _choose_tool(chat, "Always call echo")
    chat.type_and_enter("Echo hello.")
    _answer(chat, "Allow")

    def allow_more() -> bool:  # the model may call it again in a later round: each asks
        if "Allow" in _options(chat):
            chat.page.locator("#chatbot .option", has_text="Allow").first.click()
        return not chat.busy()

    chat.wait_for(allow_more, "the reply", every=0.5)
    _finished_turn(chat, "Echo hello.")
    chat.reload()
    text = chat.page.locator("#chatbot").inner_text()
    assert "🛠 echo" in text, text[:500]
