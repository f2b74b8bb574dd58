"""The other tabs in a real Chromium: Characters (edit, save, chat; import a SillyTavern PNG card), Sampling
(values persist in the session), History (search, open, rename, download, upload, delete), GPU, language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.harness import missing
from tests.browser.ui import ChatPage

CARD = Path("/work/shared/fixtures/cards/default_Seraphina.png")


def _api_json(chat: ChatPage, method: str, path: str, **kw: Any) -> Any:
    r = chat.api(method, path, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.json()


# --- Characters ---------------------------------------------------------------------------------------


def test_edit_a_character_save_it_and_chat_with_it(chat: ChatPage) -> None:
    chat.open_tab("Characters")
    chat.wait_for(lambda: chat.value("ch-name"), "the first character in the form")
    chat.click("ch-new")
    chat.wait_for(lambda: chat.value("ch-name") == "", "an empty form")
    chat.fill("ch-name", "ui_test_captain")
    chat.fill("ch-title", "Captain Test")
    chat.fill("ch-system-prompt", "You are {{char}}, a ship's captain. Answer in one short sentence.")
    chat.fill("ch-greeting", "Ahoy {{user}}, first greeting.")
    chat.click("ch-save")
    chat.wait_toast("Saved")
    assert (
        _api_json(chat, "GET", "/api/presets/ui_test_captain")["greeting"] == "Ahoy {{user}}, first greeting."
    )

    chat.fill("ch-greeting", "Ahoy {{user}}, edited greeting!")  # edit the saved character
    chat.click("ch-save")
    chat.wait_for(
        lambda: (
            chat.api("GET", "/api/presets/ui_test_captain").json()["greeting"]
            == "Ahoy {{user}}, edited greeting!"
        ),
        "the edit to be saved",
    )

    chat.open_tab("Chat")
    chat.pick_character("Captain Test")
    chat.wait_for(lambda: chat.bots() == ["Ahoy User, edited greeting!"], "the edited greeting")
    doc = chat.send("Where are we sailing?")
    assert doc["character_name"] == "ui_test_captain"
    assert doc["character"]["system_prompt"].startswith("You are {{char}}, a ship's captain")
    prompt = _api_json(chat, "GET", f"/api/sessions/{doc['id']}/prompt")
    assert prompt[0]["role"] == "system" and "Captain Test, a ship's captain" in prompt[0]["content"]
    assert doc["messages"][-1]["content"].strip()


def test_import_a_sillytavern_png_card_by_upload(chat: ChatPage) -> None:
    if not CARD.is_file():
        missing(f"card fixture not found: {CARD}")
    before = {p["name"] for p in _api_json(chat, "GET", "/api/presets")}
    chat.open_tab("Characters")
    chat.wait_for(lambda: chat.value("ch-name"), "the character form")
    chat.page.locator("#ch-import input[type=file]").set_input_files(str(CARD))
    chat.wait_toast("Imported")
    after = _api_json(chat, "GET", "/api/presets")
    new = [p for p in after if p["name"] not in before]
    assert len(new) == 1 and "Seraphina" in new[0]["title"], new
    # the toast shows while the handler runs; the form fills when its outputs arrive
    chat.wait_for(lambda: chat.value("ch-title") == new[0]["title"], "the imported card in the form")
    assert chat.value("ch-greeting").strip()
    chat.open_tab("Chat")
    chat.pick_character(new[0]["title"])
    chat.wait_for(lambda: len(chat.bots()) == 1 and chat.bots()[0].strip(), "Seraphina's greeting")


# --- Sampling -----------------------------------------------------------------------------------------


def test_sampling_values_persist_in_the_session(chat: ChatPage) -> None:
    doc = chat.send("Say hello.")
    chat.open_tab("Sampling")
    chat.wait_for(
        lambda: doc["title"] in chat.page.locator("#sp-target").inner_text(), "the open chat as target"
    )
    chat.fill("sp-temperature", "0.35")
    chat.fill("sp-max_tokens", "7")
    chat.fill("sp-seed", "123")
    chat.click("sp-apply")
    chat.wait_for(
        lambda: chat.stored(doc["id"])["params"].get("max_tokens") == 7,
        "the values to be saved in the session",
    )
    params = chat.stored(doc["id"])["params"]
    assert params["temperature"] == 0.35 and params["seed"] == 123, params

    chat.reload()
    chat.open_tab("Sampling")
    chat.wait_for(lambda: chat.value("sp-max_tokens") == "7", "the session's values after a reload")
    assert float(chat.value("sp-temperature")) == 0.35
    chat.open_tab("Chat")
    after = chat.send("Tell me a long story about the sea.")
    assert after["messages"][-1]["metrics"]["completion_tokens"] <= 7


# --- History ------------------------------------------------------------------------------------------


def _import(chat: ChatPage, title: str, user: str, reply: str) -> str:
    doc = {
        "schema_version": 1,
        "title": title,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}],
    }
    return str(_api_json(chat, "POST", "/api/sessions/import", json=doc)["id"])


def _table_rows(chat: ChatPage) -> list[str]:
    return [t.strip() for t in chat.page.locator("#hi-table .virtual-row").all_inner_texts()]


def _click_row(chat: ChatPage, text: str) -> None:
    chat.page.locator("#hi-table .virtual-row", has_text=text).locator("[role=gridcell]").first.click()


def test_history_search_open_rename_download_upload_delete(chat: ChatPage) -> None:
    alpha = _import(chat, "Alpha apples", "Do you like apples?", "Apples are great.")
    beta = _import(chat, "Beta bananas", "Do you like bananas?", "Bananas are great.")
    chat.open_tab("History")
    chat.wait_for(lambda: any("Alpha apples" in r for r in _table_rows(chat)), "the saved chats listed")

    chat.fill("hi-search", "bananas")
    chat.wait_for(
        lambda: len(_table_rows(chat)) == 1 and "Beta bananas" in _table_rows(chat)[0], "the search"
    )
    _click_row(chat, "Beta bananas")
    chat.wait_for(lambda: beta in chat.page.locator("#hi-selected").inner_text(), "the chat to be selected")

    chat.fill("hi-title", "Beta renamed")
    chat.click("hi-rename")
    chat.wait_for(lambda: chat.stored(beta)["title"] == "Beta renamed", "the new title on disk")

    with chat.page.expect_download() as info:
        chat.click("hi-download-json")
    downloaded = Path(info.value.path()).read_bytes()
    assert downloaded == chat.api("GET", f"/api/sessions/{beta}").content, "the download differs from the API"
    assert b"api_key" not in downloaded and b"Authorization" not in downloaded

    target = Path(info.value.path()).with_name("upload.json")
    target.write_bytes(downloaded)
    listed = {s["id"] for s in _api_json(chat, "GET", "/api/sessions")}
    chat.page.locator(
        "xpath=//button[@id='hi-import']/preceding-sibling::input[@type='file'][1]"
    ).set_input_files(str(target))
    chat.wait_toast("Imported")
    new = {s["id"] for s in _api_json(chat, "GET", "/api/sessions")} - listed
    assert len(new) == 1, new
    copy_id = new.pop()
    copy = chat.stored(copy_id)
    assert copy["messages"] == chat.stored(beta)["messages"] and copy["title"] == "Beta renamed"
    chat.wait_for(lambda: copy_id in chat.page.locator("#hi-selected").inner_text(), "the import selected")

    chat.click("hi-open")  # opens the selected chat in the chat tab
    chat.wait_for(
        lambda: chat.session_id() == copy_id and chat.bots() == ["Bananas are great."], "the opened chat"
    )
    # back to History: wait until its refresh on opening has run (it lists a chat made just now)
    _import(chat, "bananas sync marker", "x", "y")
    chat.open_tab("History")
    chat.wait_for(lambda: any("bananas sync marker" in r for r in _table_rows(chat)), "the tab's refresh")

    chat.fill("hi-search", "")
    chat.wait_for(lambda: any("Alpha apples" in r for r in _table_rows(chat)), "the whole list again")
    _click_row(chat, "Alpha apples")
    chat.wait_for(lambda: alpha in chat.page.locator("#hi-selected").inner_text(), "Alpha selected")
    chat.click("hi-delete")
    chat.wait_for(lambda: chat.page.locator("#hi-confirm-row").is_visible(), "the confirmation")
    assert "Alpha apples" in chat.page.locator("#hi-confirm-text").inner_text()
    assert chat.api("GET", f"/api/sessions/{alpha}").status_code == 200, "deleted before the confirmation"
    chat.click("hi-confirm")
    chat.wait_for(
        lambda: chat.api("GET", f"/api/sessions/{alpha}").status_code == 404, "the chat to be deleted"
    )
    chat.wait_for(lambda: not any("Alpha apples" in r for r in _table_rows(chat)), "the row to disappear")
    trash = chat.server.data_dir / "trash"
    assert (trash / f"{alpha}.json").is_file(), "a deleted chat goes to the trash folder"


def test_history_lists_what_was_typed_even_as_the_tab_opens(chat: ChatPage) -> None:
    # the tab lists its chats for the search it last had; words typed at once must win over that listing
    _import(chat, "Gamma grapes", "Grapes?", "Grapes.")
    _import(chat, "Delta dates", "Dates?", "Dates.")
    chat.open_tab("History")
    chat.fill("hi-search", "grapes")
    chat.wait_for(lambda: len(_table_rows(chat)) == 1 and "grapes" in _table_rows(chat)[0], "grapes")
    for words in ("dates", "grapes", "dates", "grapes", "dates"):
        chat.open_tab("Chat")
        chat.open_tab("History")
        chat.fill("hi-search", words)
        chat.wait_for(lambda w=words: len(_table_rows(chat)) == 1 and w in _table_rows(chat)[0], words)
        chat.page.wait_for_timeout(400)  # a listing that finished late would have replaced it by now
        assert len(_table_rows(chat)) == 1 and words in _table_rows(chat)[0], _table_rows(chat)


def test_history_shows_html_in_titles_as_text(chat: ChatPage) -> None:
    sid = _import(chat, '<img src=x onerror=alert(1)> <b id="bold">t</b>', "<script>alert(2)</script>", "ok")
    chat.open_tab("History")
    chat.wait_for(lambda: any("<img src=x" in r for r in _table_rows(chat)), "the title shown as text")
    _click_row(chat, "<img src=x")
    chat.wait_for(lambda: sid in chat.page.locator("#hi-selected").inner_text(), "the chat selected")
    chat.click("hi-open")
    chat.wait_for(lambda: chat.session_id() == sid, "the chat opened")
    chat.page.wait_for_timeout(500)
    made = "#hi-table img, #hi-selected img, #status-line img, #chatbot .message-content img, #bold, script#x"
    assert chat.page.locator(made).count() == 0, "an element was created from a title or message"
    assert chat.dialogs == []


# --- GPU and language ---------------------------------------------------------------------------------


def _line(chat: ChatPage, elem_id: str) -> str:
    """The drawn line's path of a plot ('' until it has one)."""
    paths = chat.page.locator(f"#{elem_id} svg.marks .mark-line path")
    return str(paths.first.get_attribute("d") or "") if paths.count() else ""


def test_gpu_tab_without_a_gpu_plots_cpu_and_memory_live(chat: ChatPage) -> None:
    chat.open_tab("GPU & models")
    chat.wait_for(lambda: "CPU" in chat.page.locator("#gpu-summary").inner_text(), "the tab to say CPU")
    for kind in ("vram", "util"):  # nothing to show there: hidden rather than two empty frames
        chat.wait_for(lambda k=kind: not chat.page.locator(f"#gpu-plot-{k}").is_visible(), f"{kind} hidden")
    for kind in ("cpu", "rss"):
        chat.wait_for(lambda k=kind: _line(chat, f"sys-plot-{k}"), f"a line in the {kind} plot")
    readout = chat.page.locator("#sys-readout").inner_text()
    assert "CPU" in readout and "MB" in readout, readout
    first = {kind: _line(chat, f"sys-plot-{kind}") for kind in ("cpu", "rss")}
    for kind in ("cpu", "rss"):  # live: the lines grow every 2 s while the tab is open
        chat.wait_for(
            lambda k=kind: _line(chat, f"sys-plot-{k}") not in ("", first[k]), f"the {kind} plot to move", 30
        )
    model = chat.page.locator("#gpu-model").inner_text()
    assert "SmolLM2" in model, model


def test_switch_to_japanese(chat: ChatPage) -> None:
    chat.page.locator("#lang-switch label", has_text="日本語").click()
    chat.wait_for(lambda: chat.page.get_by_role("tab", name="チャット").count() == 1, "Japanese tab labels")
    chat.wait_for(lambda: chat.page.locator("#send").inner_text().strip() == "送信", "Japanese buttons")
    chat.wait_for(lambda: chat.page.get_by_role("tab", name="履歴").count() == 1, "every tab in Japanese")
    chat.reload()  # the choice is remembered
    chat.wait_for(
        lambda: chat.page.locator("#send").inner_text().strip() == "送信", "Japanese after a reload"
    )
    doc = chat.send("こんにちは")
    assert "セッション" in chat.status(), chat.status()
    assert doc["messages"][-1]["content"].strip()
    chat.page.locator("#lang-switch label", has_text="English").click()
    chat.wait_for(lambda: chat.page.locator("#send").inner_text().strip() == "Send", "English again")
