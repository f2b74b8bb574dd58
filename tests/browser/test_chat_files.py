"""The chat tab's own file buttons: Download chat (the exact session file), Export Markdown, Export
SillyTavern (JSONL), Upload chat (import, then open), without leaving the tab."""

from __future__ import annotations

from pathlib import Path

from engine.st_chat import parse_st_jsonl
from tests.browser.ui import ChatPage


def _download(chat: ChatPage, elem_id: str) -> bytes:
    with chat.page.expect_download() as info:
        chat.click(elem_id)
    return Path(info.value.path()).read_bytes()


def _download_when(chat: ChatPage, elem_id: str, want: bytes) -> bytes:
    """The button's file once it is `want` (the buttons are refreshed just after a turn ends)."""
    got: list[bytes] = []

    def matches() -> bool:
        if not chat.page.locator(f"#{elem_id}").is_enabled():
            return False
        got.append(_download(chat, elem_id))
        return got[-1] == want

    chat.wait_for(matches, f"{elem_id} to give the stored chat", timeout=30, every=0.5)
    return got[-1]


def test_download_markdown_and_upload_on_the_chat_tab(chat: ChatPage, tmp_path: Path) -> None:
    assert not chat.page.locator("#chat-download").is_enabled(), "nothing to download before a chat"
    doc = chat.send("Name a fruit.")
    doc = chat.send("And a vegetable?")
    stored = chat.api("GET", f"/api/sessions/{doc['id']}").content
    data = _download_when(chat, "chat-download", stored)
    assert data == stored, "the download is not the stored file byte for byte"

    md = _download(chat, "chat-download-md").decode("utf-8")
    assert "Name a fruit." in md and "And a vegetable?" in md
    assert doc["messages"][-1]["content"].strip()[:20] in md
    st = _download(chat, "chat-download-st")
    assert st == chat.api("GET", f"/api/sessions/{doc['id']}/sillytavern.jsonl").content
    assert [m["content"] for m in parse_st_jsonl(st)["messages"]] == [m["content"] for m in doc["messages"]]

    # upload it: a new chat (new id) opens in the tab with the same messages; the original stays
    target = tmp_path / "shared-chat.json"
    target.write_bytes(data)
    chat.page.locator("#chat-upload").locator(
        "xpath=preceding-sibling::input[@type='file'][1]"
    ).set_input_files(str(target))
    chat.wait_toast("Uploaded and opened")
    chat.wait_for(lambda: chat.session_id() not in (None, doc["id"]), "the uploaded chat to open")
    copy = chat.stored()
    assert copy["messages"] == doc["messages"] and copy["id"] != doc["id"]
    assert chat.users() == ["Name a fruit.", "And a vegetable?"]
    assert chat.bots() == [m["content"] for m in doc["messages"] if m["role"] == "assistant"]
    assert chat.stored(doc["id"])["messages"] == doc["messages"], "the original chat changed"

    # the buttons now give the opened copy, and the chat goes on from it
    assert _download_when(chat, "chat-download", chat.api("GET", f"/api/sessions/{copy['id']}").content)
    after = chat.send("Thanks!")
    assert after["id"] == copy["id"] and len(after["messages"]) == len(doc["messages"]) + 2


def test_a_new_chat_disables_the_downloads(chat: ChatPage) -> None:
    chat.send("Hello.")
    chat.wait_for(lambda: chat.page.locator("#chat-download").is_enabled(), "the download button")
    chat.click("new-chat")
    chat.wait_for(lambda: not chat.page.locator("#chat-download").is_enabled(), "the button to be disabled")
    assert not chat.page.locator("#chat-download-md").is_enabled()


def test_a_bad_upload_is_a_clear_message(chat: ChatPage, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-chat.json"
    bad.write_text('{"hello": "world"}')
    sid = chat.session_id()
    chat.page.locator("#chat-upload").locator(
        "xpath=preceding-sibling::input[@type='file'][1]"
    ).set_input_files(str(bad))
    chat.wait_for(lambda: any(t and "Uploaded" not in t for t in chat.toasts()), "an error message")
    assert chat.session_id() == sid, "a failed upload changed the open chat"
