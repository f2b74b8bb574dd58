"""A long chat shows its last rows (webui/tabs/chat.py WINDOW), with "Show earlier"; clicks and edits on
the rows shown reach the right messages, and a new turn streams into the window."""

from __future__ import annotations

import json
from pathlib import Path

from tests.browser.ui import ChatPage
from webui.tabs.chat import WINDOW, WINDOW_STEP

N = 300  # messages: more than the window holds


def _upload(chat: ChatPage, path: Path) -> None:
    messages = []
    for i in range(N // 2):
        messages += [
            {"role": "user", "content": f"Question {i}"},
            {"role": "assistant", "content": f"Answer {i}"},
        ]
    path.write_text(json.dumps(messages), encoding="utf-8")
    chat.page.locator("#chat-upload").locator(
        "xpath=preceding-sibling::input[@type='file'][1]"
    ).set_input_files(str(path))
    chat.wait_toast("Uploaded and opened")


def _rows(chat: ChatPage) -> int:
    return len(chat.bots()) + len(chat.users())


def test_a_long_chat_shows_its_end_and_earlier_on_demand(chat: ChatPage, tmp_path: Path) -> None:
    _upload(chat, tmp_path / "long.json")
    chat.wait_for(lambda: chat.bots() and chat.bots()[-1] == f"Answer {N // 2 - 1}", "the last answer")
    shown = _rows(chat)
    assert WINDOW <= shown < WINDOW + WINDOW_STEP
    assert f"{N - shown} earlier rows hidden" in chat.status()

    # the first row shown maps to its own message, not to the chat's first
    chat.page.get_by_text("Message details", exact=True).click()
    first_user = chat.page.locator("#chatbot [data-testid=user]").first
    number = int(first_user.inner_text().split()[-1]) * 2 + 1  # "Question i" is message 2i+1
    assert number == N - shown + 1
    first_user.click()
    chat.wait_for(
        lambda: f'"message":{number},' in "".join(chat.page.locator("#message-details").inner_text().split()),
        "the clicked message's details",
    )

    # an edit of the last answer, through the chatbot, makes a version of that message
    chat.page.locator("#chatbot .message-row").last.hover()
    chat.page.locator("#chatbot button[aria-label=Edit]").last.click()
    chat.page.locator("#chatbot textarea.edit-textarea").fill("Edited last answer.")
    chat.page.locator("#chatbot button[aria-label=Submit]").click()
    sid = chat.session_id()
    chat.wait_for(lambda: chat.stored(sid)["messages"][-1]["content"] == "Edited last answer.", "the edit")
    stored = chat.stored(sid)["messages"]
    assert (
        len(stored) == N and stored[-1]["versions"] == 2 and stored[-3]["content"] == f"Answer {N // 2 - 2}"
    )

    chat.click("show-earlier")
    chat.wait_for(lambda: _rows(chat) >= 2 * WINDOW, "the earlier rows")
    while _rows(chat) < N:
        before = _rows(chat)
        chat.click("show-earlier")
        chat.wait_for(lambda b=before: _rows(chat) > b, "more earlier rows")
    assert "hidden" not in chat.status()

    doc = chat.send("One more question.")
    assert len(doc["messages"]) == N + 2 and chat.users()[-1] == "One more question."
