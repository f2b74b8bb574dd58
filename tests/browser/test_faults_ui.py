"""Faults as the browser shows them: a full disk (a warning toast, the chat stays on screen and in memory)
and a model that failed to load at start (the status line says what is wrong)."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import ServerProcess, write_config
from tests.browser.ui import ChatPage


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from tests.browser.harness import start_server

    s = start_server(tmp_path_factory.mktemp("browser-faults"), max_tokens=16)
    yield s
    s.stop()


def toast_texts(chat: ChatPage) -> list[str]:
    return [t.strip() for t in chat.page.locator("[data-testid=toast-body]").all_inner_texts()]


def test_full_disk_shows_a_warning_and_keeps_the_chat(chat: ChatPage, server: ServerProcess) -> None:
    first = chat.send("Name a fruit.")
    on_disk = chat.api("GET", f"/api/sessions/{first['id']}").content
    assert server.proc is not None
    limits = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (256, limits[1]))  # every write now fails
    try:
        chat.type_and_enter("Name a vegetable.")
        chat.wait_for(
            lambda: any("Could not save" in t for t in toast_texts(chat)), "a 'could not save' warning"
        )
        chat.wait_for(
            lambda: not chat.busy() and len(chat.bots()) == 2 and chat.bots()[1], "the unsaved reply"
        )
        shown = chat.bots()
        chat.type_and_enter("Name a tree.")
        chat.wait_for(
            lambda: (
                not chat.busy() and chat.users() == ["Name a fruit.", "Name a vegetable.", "Name a tree."]
            ),
            "the next turn, with the unsaved one still on screen",
        )
        assert chat.bots()[:2] == shown
        assert chat.api("GET", f"/api/sessions/{first['id']}").content == on_disk, (
            "a failed save changed the file"
        )
    finally:
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, limits)
    doc = chat.send("Name a flower.")  # the disk has room again: everything kept in memory is saved
    assert [m["content"] for m in doc["messages"] if m["role"] == "user"] == [
        "Name a fruit.",
        "Name a vegetable.",
        "Name a tree.",
        "Name a flower.",
    ]


def test_missing_model_status_line_says_what_is_wrong(open_page: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "config.yaml")
    bad = ServerProcess(
        tmp_path / "data", config=cfg, model=tmp_path / "no-such-model.gguf", log_path=tmp_path / "server.log"
    ).start()
    try:
        chat = open_page(srv=bad).goto()
        status = chat.status()
        assert "No model loaded" in status and "no-such-model.gguf" in status, status
        chat.type_and_enter("Hello?")
        chat.wait_for(lambda: any("no-such-model.gguf" in t for t in toast_texts(chat)), "an error toast")
        assert chat.bots() == []
    finally:
        bad.stop()


def test_a_model_crash_mid_reply_shows_a_toast_and_the_chat_goes_on(open_page: Any, tmp_path: Path) -> None:
    from tests.browser.harness import start_server

    fault = tmp_path / "fault"
    srv = start_server(tmp_path / "srv", max_tokens=48, env={"LLMCHAT_FAULT_FILE": str(fault)})
    try:
        chat = open_page(srv=srv).goto()
        chat.send("Name a fruit.")
        fault.write_text("SIGSEGV@token:3")  # the model process dies of a real SIGSEGV after 3 tokens
        chat.type_and_enter("Tell me a long story.")
        chat.wait_for(
            lambda: any("crashed (SIGSEGV)" in t for t in toast_texts(chat)), "a toast naming the crash"
        )
        chat.wait_for(lambda: not chat.busy(), "the turn to end")
        assert chat.users() == ["Name a fruit.", "Tell me a long story."]
        assert len(chat.bots()) == 2 and chat.bots()[1], "the partial reply stays on screen"
        doc = chat.send("Name a tree.")  # no reload: the restarted model answers
        assert [m["content"] for m in doc["messages"] if m["role"] == "user"][-1] == "Name a tree."
        assert doc["messages"][3]["interrupted"] and doc["messages"][-1]["content"]
    finally:
        srv.stop()
