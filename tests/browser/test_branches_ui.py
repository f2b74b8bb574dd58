"""Branches and group chats in the chat tab, in a real Chromium against the real server and model: an edit
makes a new version (◂ n/m ▸) and ◀ ▶ bring back the old branch intact; Regenerate on an earlier reply and
Branch from here do the same; "Speak now" (the speaker picker and each member's button) in a group chat."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.harness import ServerProcess, start_server
from tests.browser.ui import ChatPage


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(tmp_path_factory.mktemp("browser-branches"), max_tokens=16)  # short replies
    yield s
    s.stop()


def _edit(chat: ChatPage, nth: int, text: str) -> None:
    """Edit the nth message the chatbot shows (0 = the first) through its Edit button."""
    chat.page.locator("#chatbot .message-row").nth(nth).hover()
    chat.page.locator("#chatbot button[aria-label=Edit]").nth(nth).click()
    chat.page.locator("#chatbot textarea.edit-textarea").fill(text)
    chat.page.locator("#chatbot button[aria-label=Submit]").click()


def _message_text(chat: ChatPage, nth: int) -> str:
    return str(chat.page.locator("#chatbot .message-row").nth(nth).inner_text())


def test_edit_the_second_message_and_go_back_to_the_first_version(chat: ChatPage) -> None:
    chat.send("Name a fruit.")
    doc = chat.send("Name a vegetable.")
    old = [m["content"] for m in doc["messages"]]
    assert len(old) == 4

    _edit(chat, 1, "Edited reply.")  # the first reply: a new version, no new reply, the rest stays with v1
    chat.wait_for(lambda: chat.bots() == ["Edited reply."], "the edited reply alone on its branch")
    assert "◂ 2/2 ▸" in _message_text(chat, 1)
    stored = chat.stored(doc["id"])
    assert [m["content"] for m in stored["messages"]] == [old[0], "Edited reply."]
    assert stored["messages"][1]["versions"] == 2 and stored["messages"][1]["version"] == 1

    chat.page.locator("#chatbot [data-testid=user]").first.click()  # a message with no versions
    chat.wait_for(lambda: "Message 2" not in chat.status(), "the status line to follow the click")
    chat.page.locator("#chatbot [data-testid=bot]").first.click()  # select it, then ◀
    chat.wait_for(lambda: "Message 2: version ◂ 2/2" in chat.status(), "the clicked message's version")
    chat.click("prev-alt")
    chat.wait_for(lambda: chat.bots() == [old[1], old[3]], "version 1 with its old continuation")
    assert chat.users() == [old[0], old[2]]
    assert "◂ 1/2 ▸" in _message_text(chat, 1) and "1/2" in chat.status()
    stored = chat.stored(doc["id"])
    assert [m["content"] for m in stored["messages"]] == old  # nothing was lost

    _edit(chat, 2, "Name a colour.")  # a user message: a new version, and a new reply after it
    doc = chat.wait_idle(lambda d: len(d["messages"]) == 4 and d["messages"][2]["versions"] == 2)
    assert doc["messages"][2]["content"] == "Name a colour." and "◂ 2/2 ▸" in _message_text(chat, 2)
    chat.click("prev-alt")  # the edited message is now the one ◀ ▶ move through
    chat.wait_for(lambda: chat.users() == [old[0], old[2]], "the old question back")
    assert chat.bots() == [old[1], old[3]]


def test_regenerate_an_earlier_reply_then_branch_from_here(chat: ChatPage) -> None:
    chat.send("Name a fruit.")
    doc = chat.send("Name a vegetable.")
    old = [m["content"] for m in doc["messages"]]

    chat.page.locator("#chatbot [data-testid=bot]").first.click()  # the first reply, not the last
    chat.wait_for(lambda: "Message 2 selected" in chat.status(), "the status line to name the clicked reply")
    chat.click("regenerate")
    doc = chat.wait_idle(lambda d: len(d["messages"]) == 2 and d["messages"][1].get("versions") == 2)
    assert doc["messages"][0]["content"] == old[0] and doc["messages"][1]["version"] == 1
    assert "◂ 2/2 ▸" in _message_text(chat, 1)
    chat.click("prev-alt")  # the later messages stayed with version 1
    chat.wait_for(lambda: chat.bots() == [old[1], old[3]], "version 1 with its old continuation")
    assert [m["content"] for m in chat.stored(doc["id"])["messages"]] == old

    chat.page.locator("#chatbot [data-testid=bot]").first.click()
    chat.wait_for(lambda: "Message 2: version ◂ 1/2" in chat.status(), "the clicked reply's version")
    chat.click("branch-here")  # the same reply as a new version; the chat goes on from it
    chat.wait_for(lambda: chat.bots() == [old[1]], "the branch to end at the reply")
    assert "◂ 3/3 ▸" in _message_text(chat, 1)
    stored = chat.stored(doc["id"])
    assert [m["content"] for m in stored["messages"]] == old[:2] and stored["messages"][1]["version"] == 2
    after = chat.send("Name a colour.")
    assert [m["content"] for m in after["messages"]][:3] == [*old[:2], "Name a colour."]
    back = chat.api("POST", f"/api/sessions/{doc['id']}/select", json={"index": 1, "version": 0}).json()
    assert [m["content"] for m in back["messages"]] == old  # nothing was lost


def test_group_chat_speak_now(chat: ChatPage) -> None:
    page = chat.page
    page.locator("#group-chat input[type=checkbox]").check()
    page.locator("#group-members").wait_for(state="visible")
    page.locator("#group-members input").click()
    for title in ("Friendly Assistant", "Patient Teacher"):
        page.locator(f'[data-testid=dropdown-option][aria-label="{title}"]').click()
    page.keyboard.press("Escape")
    doc = chat.send("Hello, both of you.")
    assert [c["name"] for c in doc["characters"]] == ["friendly", "teacher"]
    assert doc["messages"][-1]["name"] in ("Friendly Assistant", "Patient Teacher")

    page.locator("#group-speaker input").click()
    page.locator('[data-testid=dropdown-option][aria-label="Patient Teacher"]').click()
    chat.click("speak-now")
    doc = chat.wait_idle(lambda d: len(d["messages"]) == 3)
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "assistant"]
    assert doc["messages"][-1]["name"] == "Patient Teacher"
    last = page.locator("#chatbot [data-testid=bot]").last
    assert str(last.inner_text()).lstrip().startswith("Patient Teacher")
    assert last.locator('img[alt="avatar"]').count() == 1  # the speaker's avatar in the reply

    # one "Speak now" button per member, in the group's order; the spare ones stay hidden
    assert page.locator("#speak-as-0").inner_text().strip() == "Friendly Assistant"
    assert page.locator("#speak-as-1").inner_text().strip() == "Patient Teacher"
    assert not page.locator("#speak-as-2").is_visible()
    chat.click("speak-as-0")
    doc = chat.wait_idle(lambda d: len(d["messages"]) == 4)
    assert doc["messages"][-1]["name"] == "Friendly Assistant"
    chat.click("speak-as-1")
    doc = chat.wait_idle(lambda d: len(d["messages"]) == 5)
    assert [m["name"] for m in doc["messages"][2:]] == [
        "Patient Teacher",
        "Friendly Assistant",
        "Patient Teacher",
    ]
