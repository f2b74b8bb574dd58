"""Security in a real Chromium: a page on another loopback port can neither write nor frame the app, and no
text shown in the chatbot (fuzzed, and known attacks) makes an element that Markdown did not make."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.browser.harness import ServerProcess
from tests.browser.ui import ChatPage
from tests.helpers import free_port
from tests.test_markup import KNOWN, markdownish

# Elements that text in the fuzz can name; Markdown never makes any of them from that text (its links to
# "http://x..." are its own; Gradio's copy buttons hold an svg icon).
FOREIGN = "img, form, input, iframe, style, b, i, a[href='x'], svg:not(button svg), script, textarea, video"

ATTACKER_PAGE = """<!doctype html><html><body>
<iframe id="framed" src="{app}/" width="600" height="300"></iframe>
<iframe name="sink" style="display:none"></iframe>
<form id="form" method="POST" action="{app}/api/sessions/import" enctype="text/plain" target="sink">
  <input name='[{{"role": "user", "content": "planted by a form", "x": "' value='"}}]'>
</form>
<script>
const app = "{app}";
const card = new FormData();
const json = '{{"name": "Planted", "description": "x"}}';
card.append("file", new Blob([json], {{type: "application/json"}}), "card.json");
const doc = '[{{"role": "user", "content": "planted by a web page"}}]';
const attempts = [
  fetch(app + "/api/sessions/import", {{method: "POST", mode: "no-cors", body: doc}}),
  fetch(app + "/api/sessions/import", {{method: "POST", mode: "no-cors", body: doc,
        headers: {{"Content-Type": "text/plain"}}, credentials: "include"}}),
  fetch(app + "/api/presets/import", {{method: "POST", mode: "no-cors", body: card, credentials: "include"}}),
  fetch(app + "/gradio_api/queue/join", {{method: "POST", mode: "no-cors",
        body: '{{"data": [], "fn_index": 0, "session_hash": "x"}}'}}),
  fetch(app + "/api/sessions", {{credentials: "include"}}).then(r => r.text()).then(t => window.readBack = t),
];
document.getElementById("form").submit();
Promise.allSettled(attempts).then(r => {{ window.results = r.map(x => x.status); }});
</script></body></html>"""


@contextlib.contextmanager
def attacker_site(app_url: str) -> Iterator[str]:
    """A page served from a second loopback port: same site as the app (same host), another origin."""
    page = ATTACKER_PAGE.format(app=app_url).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def server_state(chat: ChatPage) -> tuple[list[str], list[str]]:
    sessions = sorted(s["id"] for s in chat.api("GET", "/api/sessions").json())
    presets = sorted(p["name"] for p in chat.api("GET", "/api/presets").json())
    return sessions, presets


def test_a_page_on_another_port_can_neither_write_nor_frame_the_app(
    browser: Any, chat: ChatPage, server: ServerProcess
) -> None:
    """Before: fetch(..., {mode: "no-cors"}) from another origin planted a session and a character."""
    before = server_state(chat)
    context = browser.new_context()
    try:
        page = context.new_page()
        with attacker_site(server.url) as url:
            page.goto(url)
            page.wait_for_function("() => window.results !== undefined", timeout=30_000)
            page.wait_for_load_state("load")  # the frames too
            page.wait_for_timeout(1500)  # the form posts into a hidden frame; let it land
            assert page.evaluate("() => window.readBack") is None  # the list could not be read
            framed = next(f for f in page.frames if f.name == "framed")
            assert not framed.url.startswith(server.url), "the app loaded inside another site's frame"
            assert page.frame_locator("#framed").locator("#chatbot").count() == 0
    finally:
        context.close()
    assert server_state(chat) == before, "a page on another origin changed the server's data"
    assert "planted" not in server.log_text()


def open_in_chat(chat: ChatPage, texts: list[str]) -> str:
    """Import a session holding `texts` as its messages and open it in the chat tab (History > Open)."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    if messages[-1]["role"] == "user":
        messages.append({"role": "assistant", "content": "end"})
    title = f"fuzz {len(chat.api('GET', '/api/sessions').json())}"
    sid = chat.api(
        "POST", "/api/sessions/import", json={"schema_version": 1, "title": title, "messages": messages}
    )
    assert sid.status_code == 200, sid.text
    sid_value = str(sid.json()["id"])
    chat.open_tab("History")
    chat.fill("hi-search", title)
    row = chat.page.locator("#hi-table .virtual-row", has_text=title)
    chat.wait_for(lambda: row.count() == 1, "the imported chat listed")
    row.locator("[role=gridcell]").first.click()
    chat.wait_for(lambda: sid_value in chat.page.locator("#hi-selected").inner_text(), "the chat selected")
    chat.click("hi-open")
    chat.wait_for(lambda: chat.session_id() == sid_value, "the chat opened")
    chat.wait_for(lambda: len(chat.bots()) + len(chat.users()) == len(messages), "every message shown")
    return sid_value


def assert_no_foreign_element(chat: ChatPage, texts: list[str]) -> None:
    chat.page.wait_for_timeout(300)  # Markdown renders (and mermaid would run) after the value arrives
    made = chat.page.locator(f"#chatbot .message-content :is({FOREIGN})")
    found = made.evaluate_all("els => els.map(e => e.outerHTML.slice(0, 200))")
    assert found == [], f"elements made from text: {found}\ntexts: {texts!r}"
    assert chat.page.locator("#chatbot .mermaid").count() == 0, "a mermaid diagram was drawn from text"
    assert chat.dialogs == []


def test_known_attacks_show_as_text_in_the_chatbot(chat: ChatPage) -> None:
    """The cases the old regex missed, the 'Sign in again' form of a card greeting, and a mermaid label."""
    open_in_chat(chat, KNOWN)
    assert_no_foreign_element(chat, KNOWN)
    shown = chat.page.locator("#chatbot").inner_text()
    assert "Sign in again" in shown and "<form" in shown  # shown, as text


@settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(texts=st.lists(markdownish.filter(str.strip), min_size=20, max_size=20))
def test_fuzzed_markdown_makes_no_element_in_the_chatbot(chat: ChatPage, texts: list[str]) -> None:
    """Random text of backticks, fences, backslashes, <, > and tag names, rendered by Gradio's own
    Markdown in Chromium: no element that Markdown itself did not make."""
    open_in_chat(chat, texts)
    assert_no_foreign_element(chat, texts)
