"""Personas, lorebooks, "Start reply with" and Impersonate in a real Chromium against the real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.browser.ui import ChatPage

WORLD = Path(__file__).parent.parent / "data" / "lore" / "eldoria_world_info.json"


def _api_json(chat: ChatPage, method: str, path: str, **kw: Any) -> Any:
    r = chat.api(method, path, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.json()


def test_import_a_lorebook_edit_an_entry_and_test_activation(chat: ChatPage) -> None:
    chat.open_tab("Lorebooks")
    chat.page.locator("#lo-import input[type=file]").set_input_files(str(WORLD))
    chat.wait_toast("Imported")
    name = WORLD.stem
    assert _api_json(chat, "GET", f"/api/lorebooks/{name}") == json.loads(WORLD.read_text("utf-8"))
    chat.wait_for(lambda: chat.value("lo-f-comment") == "Eldoria", "the first entry in the editor")
    chat.fill("lo-f-content", "Eldoria is a kingdom of rivers.")
    chat.click("lo-entry-save")
    chat.wait_toast("Saved entry 0")
    saved = _api_json(chat, "GET", f"/api/lorebooks/{name}")["entries"]["0"]
    assert saved["content"] == "Eldoria is a kingdom of rivers."
    assert saved["characterFilter"] == {
        "isExclude": False,
        "names": [],
        "tags": [],
    }  # fields the form lacks stay
    chat.fill("lo-test-text", "We travel to Eldoria.")
    chat.click("lo-test-run")
    chat.wait_for(lambda: '"constant"' in chat.page.locator("#lo-test-out").inner_text(), "the test result")
    out = "".join(chat.page.locator("#lo-test-out").inner_text().split())  # the JSON view splits lines
    assert '"why":"Eldoria"' in out and "Highspire" not in out  # the edited content names no other entry


def test_persona_prefix_and_impersonate_in_the_chat_tab(chat: ChatPage) -> None:
    chat.open_tab("Lorebooks")
    chat.fill("lo-persona-name", "Ken")
    chat.fill("lo-persona-desc", "{{user}} is a sailor.")
    chat.click("lo-persona-save")
    chat.wait_toast("Saved persona")
    assert _api_json(chat, "GET", "/api/personas/Ken")["default"] is True
    chat.reload()
    chat.page.locator("#chat-options").get_by_text("Persona, lorebooks and reply start").click()
    chat.fill("reply-prefix", "Aye,")
    doc = chat.send("Where do we sail?")
    assert doc["reply_prefix"] == "Aye," and doc["messages"][-1]["content"].startswith("Aye,")
    prompt = _api_json(chat, "GET", f"/api/sessions/{doc['id']}/prompt")
    assert "Ken is a sailor." in prompt[0]["content"]  # the default persona

    before = chat.api("GET", f"/api/sessions/{doc['id']}").content
    chat.click("impersonate")
    chat.wait_for(lambda: chat.value("message").strip(), "a drafted message in the box")
    chat.wait_for(lambda: not chat.busy(), "the draft to finish")
    assert chat.api("GET", f"/api/sessions/{doc['id']}").content == before  # nothing saved
