"""ChatPage: drive the chat tab by its elem_ids; check what the browser shows against the stored session."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.browser.harness import ServerProcess
from webui.tabs.chat_tree import plain_text

NAVIGATION_NOISE = ("AbortError: signal is aborted", "Connection errored out", "Failed to fetch")
SESSION_ID = re.compile(r"s-\d{8}-\d{6}-[0-9a-f]{6}")

# Records every text the last bot message shows, so a test can see the reply grow.
RECORD_STATES = """() => {
  window.__states = [];
  const box = document.querySelector('#chatbot');
  const grab = () => {
    const bots = box.querySelectorAll('[data-testid=bot]');
    const last = bots.length ? bots[bots.length - 1].getAttribute('aria-label') : null;
    const s = window.__states;
    if (last !== null && s[s.length - 1] !== last) s.push(last);
  };
  const all = {subtree: true, childList: true, characterData: true, attributes: true};
  new MutationObserver(grab).observe(box, all);
}"""


# Records every error badge (a status tracker saying Error) and error toast the page ever shows, so a test
# fails on one even if it was gone by the time the test looked.
WATCH_ERRORS = """() => {
  window.__errorBadges = [];
  const seen = new Set();
  const note = (what) => { if (!seen.has(what)) { seen.add(what); window.__errorBadges.push(what); } };
  const scan = () => {
    for (const el of document.querySelectorAll('[data-testid=status-tracker]')) {
      if (el.querySelector('.error') || /\bError\b|エラー/.test(el.textContent || '')) {
        const owner = el.parentElement?.closest('[id]')?.id || el.parentElement?.className || '?';
        note(`badge on #${owner}: ${(el.textContent || '').trim().slice(0, 120)}`);
      }
    }
    for (const el of document.querySelectorAll('[data-testid=toast-body]')) {
      if (/error/i.test(el.className) || /^\\s*(Error|エラー)/.test(el.textContent || '')) {
        note(`error toast: ${(el.textContent || '').trim().slice(0, 160)}`);
      }
    }
  };
  const start = () => new MutationObserver(scan).observe(document.documentElement,
    {subtree: true, childList: true, characterData: true, attributes: true});
  if (document.documentElement) start(); else document.addEventListener('DOMContentLoaded', start);
}"""


class ChatPage:
    def __init__(self, page: Any, server: ServerProcess) -> None:
        self.page = page
        self.server = server
        page.add_init_script(f"({WATCH_ERRORS})()")
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self._navigating = False
        self.console: list[str] = []  # every console message, saved with the failure artifacts
        page.on("pageerror", lambda e: self._error(f"pageerror: {e}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        self.console.append(f"{time.strftime('%H:%M:%S')} {msg.type}: {msg.text}")
        if msg.type == "error":
            self._error(f"console.error: {msg.text}")

    def _error(self, text: str) -> None:
        # Leaving the page aborts Gradio's open connections, which it logs as errors: not a bug of ours.
        if self._navigating and any(m in text for m in NAVIGATION_NOISE):
            return
        self.errors.append(text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    # --- navigation -----------------------------------------------------------------------------------

    def goto(self, path: str = "/") -> ChatPage:
        self._navigating = True
        try:
            self.page.goto(self.server.url + path)
            self.wait_loaded()
        finally:
            self._navigating = False
        return self

    def reload(self) -> ChatPage:
        self._navigating = True
        try:
            self.page.reload()
            self.wait_loaded()
        finally:
            self._navigating = False
        return self

    def wait_loaded(self) -> None:
        self.page.wait_for_selector("#message textarea")
        # demo.load fills the status line; until then the page is not ready for input
        self.wait_for(lambda: bool(self.status().strip()), "the status line to be filled by the page load")

    # --- reading --------------------------------------------------------------------------------------

    def _labels(self, who: str) -> list[str]:
        labels = self.page.locator(f"#chatbot [data-testid={who}]").evaluate_all(
            # a thinking model's thought is a row of its own (a collapsible block): not a message
            "els => els.filter(e => !e.querySelector('.thought-group'))"
            ".map(e => e.getAttribute('aria-label'))"
        )
        prefix = f"{who}'s message: "
        # the page gets escaped text (webui/markup.py) with a display-only version footer and, in a group
        # chat, the speaker's header (webui/tabs/chat_tree.py); undo that to compare with what is stored
        return [plain_text((x or "").removeprefix(prefix)) for x in labels]

    def bots(self) -> list[str]:
        """The raw text of every assistant message (Gradio's aria-label holds it unrendered)."""
        return self._labels("bot")

    def users(self) -> list[str]:
        return self._labels("user")

    def status(self) -> str:
        """The status line's text (not Gradio's progress timer, which shows in the same block)."""
        box = self.page.locator("#status-line [data-testid=markdown]")
        return str(box.inner_text()) if box.count() else ""

    def session_id(self) -> str | None:
        m = SESSION_ID.search(self.status())
        return m.group(0) if m else None

    def busy(self) -> bool:
        cls = self.page.get_attribute("#chatbot > [data-testid=status-tracker]", "class") or ""
        return "hide" not in cls.split()

    def error_badges(self) -> list[str]:
        """Every error badge and error toast the page has shown since it was loaded."""
        try:
            return list(self.page.evaluate("() => window.__errorBadges || []"))
        except Exception:  # the page is gone
            return []

    def states(self) -> list[str]:
        states = self.page.evaluate("() => window.__states || []")
        return [plain_text(s.removeprefix("bot's message: ")) for s in states]

    # --- server side ----------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.server.url + path, timeout=kw.pop("timeout", 120), **kw)

    def stored(self, sid: str | None = None) -> dict[str, Any]:
        sid = sid or self.session_id()
        assert sid, f"no session id in the status line: {self.status()!r}"
        r = self.api("GET", f"/api/sessions/{sid}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    # --- acting ---------------------------------------------------------------------------------------

    def record_states(self) -> None:
        self.page.evaluate(RECORD_STATES)

    def type_and_enter(self, text: str) -> None:
        box = self.page.locator("#message textarea")
        box.fill(text)
        box.press("Enter")

    def click(self, elem_id: str) -> None:
        self.page.locator(f"#{elem_id}").click()

    def wait_for(self, check: Callable[[], Any], what: str, timeout: float = 90.0, every: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
            except (AssertionError, httpx.HTTPError) as exc:
                last_exc = exc
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_exc})")

    def wait_idle(
        self, check: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 120.0
    ) -> dict:
        """Wait until no event runs, the stored turn is finished and the page shows what is stored."""

        why = ["nothing checked yet"]

        def done() -> dict[str, Any] | None:
            why[0] = "an event is still running"
            if self.busy():
                return None
            sid = self.session_id()
            why[0] = f"no session id in the status line {self.status()!r}"
            if not sid:
                return None
            doc = self.stored(sid)
            msgs = doc["messages"]
            last = msgs[-1] if msgs else {}
            why[0] = f"the stored turn is not finished: {last}"
            if last.get("role") != "assistant":
                return None
            if not last.get("metrics") and not last.get("stopped") and not last.get("greeting"):
                return None
            why[0] = f"the stored chat is not what the test waits for: {msgs[-2:]}"
            if check is not None and not check(doc):
                return None
            shown = [m["content"] for m in msgs if m["role"] == "assistant"]
            why[0] = f"the page shows {self.bots()} but the stored replies are {shown}"
            if self.bots() != shown:
                return None
            return doc

        try:
            return dict(
                self.wait_for(done, "the turn to finish and the page to show the stored chat", timeout)
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {why[0]}") from None

    def send(self, text: str, *, button: bool = False) -> dict[str, Any]:
        """Send `text` and wait for the complete reply; returns the stored session."""
        if button:
            self.page.locator("#message textarea").fill(text)
            self.click("send")
        else:
            self.type_and_enter(text)
        self.wait_for(lambda: text in self.users(), f"the user message {text!r} to appear")
        return self.wait_idle(
            lambda d: (
                len(d["messages"]) >= 2
                and d["messages"][-2]["role"] == "user"
                and d["messages"][-2]["content"] == text
            )
        )

    def pick_character(self, title: str) -> None:
        """Choose a character in the dropdown by its shown title."""
        self.page.locator("#character-picker input").click()
        option = self.page.locator(f'[data-testid=dropdown-option][aria-label="{title}"]')
        option.click()

    def picked_character(self) -> str:
        return str(self.page.locator("#character-picker input").input_value())

    def open_tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def fill(self, elem_id: str, text: str) -> None:
        """Type into a Textbox (or Number) by its elem_id."""
        box = self.page.locator(
            f"#{elem_id} :is(textarea, input:not([type=range]):not([type=checkbox]))"
        ).first
        for _ in range(3):
            box.fill(text)
            box.dispatch_event("input")
            box.blur()
            # A box just shown (an accordion opened) can take its pending server value a frame after it
            # mounts, over what was typed; a person types later than that, so type again then.
            self.page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            if box.input_value() == text:
                return
        raise AssertionError(f"#{elem_id} did not keep {text!r}")

    def value(self, elem_id: str) -> str:
        box = self.page.locator(
            f"#{elem_id} :is(textarea, input:not([type=range]):not([type=checkbox]))"
        ).first
        return str(box.input_value())

    def toasts(self) -> list[str]:
        return [t.strip() for t in self.page.locator("[data-testid=toast-body]").all_inner_texts()]

    def wait_toast(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda: any(text in t for t in self.toasts()), f"a message saying {text!r}", timeout)
