"""The chat tab in a real Chromium against the real server and model (SmolLM2, greedy, seed 1)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.ui import ChatPage


def test_enter_streams_the_reply_in_several_steps(chat: ChatPage) -> None:
    chat.record_states()
    doc = chat.send("Tell me about the sea in three sentences.")
    reply = doc["messages"][-1]
    assert reply["content"].strip(), "the model gave an empty reply"
    states = [s for s in chat.states() if s]
    assert len(states) >= 3, f"expected the reply to stream in several steps, saw {states!r}"
    for a, b in zip(states, states[1:], strict=False):
        assert b.startswith(a.rstrip()[: max(0, len(a.rstrip()) - 3)]), f"the reply jumped: {a!r} -> {b!r}"
    assert states[-1] == reply["content"]
    assert chat.page.locator("#message textarea").input_value() == "", "the message box was not cleared"
    status = chat.status()
    assert "tok/s" in status and doc["id"] in status, status
    assert reply["metrics"]["finish_reason"] in ("stop", "length")


def test_edit_an_earlier_message_and_resend(chat: ChatPage) -> None:
    chat.send("What is the capital of France?")
    chat.send("And of Italy?")
    assert chat.users() == ["What is the capital of France?", "And of Italy?"]
    first = chat.page.locator("#chatbot [data-testid=user]").first
    first.hover()
    chat.page.locator("#chatbot button[aria-label=Edit]").first.click()
    box = chat.page.locator("#chatbot textarea.edit-textarea")
    box.fill("What is the capital of Spain?")
    chat.page.locator("#chatbot button[aria-label=Submit]").click()
    doc = chat.wait_idle(lambda d: d["messages"][0]["content"] == "What is the capital of Spain?")
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"], doc["messages"]
    assert chat.users() == ["What is the capital of Spain?"]
    assert chat.bots() == [doc["messages"][1]["content"]]
    assert doc["messages"][1]["content"].strip()


def test_pick_a_character_then_new_chat_shows_its_greeting(chat: ChatPage) -> None:
    preset = chat.api("GET", "/api/presets/friendly").json()
    greeting = preset["greeting"].replace("{{user}}", "User").replace("{{char}}", preset["title"])
    chat.pick_character(preset["title"])
    chat.wait_for(lambda: chat.bots() == [greeting], "the character's greeting")
    doc = chat.send("Hello!")
    assert doc["character_name"] == "friendly"
    assert doc["messages"][0]["content"] == greeting and doc["messages"][0]["greeting"] is True
    assert chat.users() == ["Hello!"]
    chat.click("new-chat")
    chat.wait_for(
        lambda: chat.users() == [] and chat.bots() == [greeting], "a new chat with only the greeting"
    )
    chat.wait_for(lambda: chat.session_id() is None, "the status line to show a new chat")
    assert chat.picked_character() == preset["title"]
    # the old chat is still saved, untouched
    assert chat.stored(doc["id"])["messages"][-2]["content"] == "Hello!"


def test_reload_mid_conversation_keeps_the_chat(chat: ChatPage) -> None:
    doc = chat.send("Name a colour.")
    doc = chat.send("Name another one.")
    users, bots, sid = chat.users(), chat.bots(), doc["id"]
    chat.reload()
    chat.wait_for(lambda: chat.session_id() == sid, "the same session after the reload")
    assert chat.users() == users and chat.bots() == bots
    after = chat.send("And a third?")
    assert after["id"] == sid and len(after["messages"]) == len(doc["messages"]) + 2


def _stateless_reply(chat: ChatPage, sid: str, params: dict[str, Any]) -> str:
    prompt = chat.api("GET", f"/api/sessions/{sid}/prompt").json()
    r = chat.api("POST", "/api/chat", json={"messages": prompt[:-1], "params": params})
    assert r.status_code == 200, r.text
    return str(r.json()["reply"])


def test_two_browsers_chat_at_once_without_crosstalk(open_page: Any) -> None:
    a, b = open_page().goto(), open_page().goto()
    texts = {id(a): "Write one sentence about cats.", id(b): "Write one sentence about rockets."}
    for p in (a, b):  # both start before either can finish
        p.page.locator("#message textarea").fill(texts[id(p)])
    a.page.locator("#message textarea").press("Enter")
    b.page.locator("#message textarea").press("Enter")
    docs = {}
    for p in (a, b):
        text = texts[id(p)]
        docs[id(p)] = p.wait_idle(
            lambda d, t=text: len(d["messages"]) == 2 and d["messages"][0]["content"] == t
        )
        assert p.users() == [text]
    da, db = docs[id(a)], docs[id(b)]
    assert da["id"] != db["id"]
    assert a.bots() == [da["messages"][1]["content"]] and b.bots() == [db["messages"][1]["content"]]
    # each reply starts as the model answers that prompt alone (greedy, same seed), and talks about its
    # own subject: nothing leaked across. The two replies were decoded in one batch, and llama.cpp's batched
    # kernels round differently from single-sequence ones, so greedy text may drift apart later on
    # (tests/test_slots.py shows it; its grammar test checks crosstalk token by token).
    for p, d, other in ((a, da, "rocket"), (b, db, "cat")):
        prompt = p.api("GET", f"/api/sessions/{d['id']}/prompt").json()
        assert prompt[-1]["role"] == "assistant" and prompt[-2]["content"] == texts[id(p)]
        alone = p.api("POST", "/api/chat", json={"messages": prompt[:-1], "params": d["params"] or None})
        assert alone.status_code == 200, alone.text
        reply = d["messages"][1]["content"]
        assert alone.json()["reply"][:16] == reply[:16], (alone.json()["reply"], reply)
        assert other not in reply.lower(), reply


def test_html_in_a_card_or_a_message_renders_as_text(chat: ChatPage) -> None:
    payload = 'Hi <img src=x onerror=alert(1)> <script>alert(2)</script> <b id="bold">b</b> &lt;i&gt;'
    r = chat.api(
        "PUT",
        "/api/presets/xss-test",
        json={"title": "XSS <img src=x onerror=alert(3)>", "greeting": payload, "system_prompt": "Be brief."},
    )
    assert r.status_code == 200, r.text
    chat.reload()  # the character list is read when the page loads
    chat.pick_character("XSS <img src=x onerror=alert(3)>")
    chat.wait_for(lambda: len(chat.bots()) == 1, "the greeting")
    chat.send("Repeat exactly: <img src=y onerror=alert(4)><svg onload=alert(5)>")
    shown = chat.page.locator("#chatbot").inner_text()
    assert "<img src=x onerror=alert(1)>" in shown and "<script>alert(2)</script>" in shown, shown
    assert "&lt;i&gt;" in shown, "an entity typed as text must show as typed"
    made = "#chatbot .message-content :is(img, script, svg, b), #status-line :is(img, script, svg), #bold"
    assert chat.page.locator(made).count() == 0, "an element was created from untrusted text"
    chat.page.wait_for_timeout(500)
    assert chat.dialogs == [], f"a dialog fired: {chat.dialogs}"
    httpx.delete(chat.server.url + "/api/presets/xss-test")


def test_send_button_and_status_line(chat: ChatPage) -> None:
    doc = chat.send("Say hi.", button=True)
    assert doc["title"] == "Say hi."
    assert "Say hi." in chat.status()
