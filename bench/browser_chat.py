"""A long chat in a real browser: Debian's Chromium, driven by playwright, on our UI.

For a chat of 2 and of 1,000 messages (opened with the chat tab's Upload chat, then reloaded):
- page load: from navigation to the chat showing its last message and the status line filled;
- first text: from the Enter key to the first streamed text of the reply on screen;
- long tasks: the main thread's tasks over 50 ms while the reply streams (PerformanceObserver), the
  longest and their total.
Each chat has one turn before the samples, so that they measure the UI with the chat's prefix in the model's
cache, as in a chat in use, and not the model's first evaluation of 3,000 tokens.
SillyTavern users report 2-7 s freezes at a few hundred messages; the targets for 1,000 messages are a
first text within 1.5x the 2-message chat's, and no long task over 200 ms while streaming.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SIZES = (2, 1000)

# Installed before the Enter key: t0 on Enter, the time the new reply first shows text, long tasks after t0.
WATCH = """(sent) => {
  const w = window.__bench = {t0: null, first: null, longtasks: []};
  const box = document.querySelector('#chatbot');
  document.querySelector('#message textarea').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && w.t0 === null) w.t0 = performance.now();
  }, {capture: true});
  // The first text: a bot row with text right after the row of the message sent. (Counting bot rows fails
  // once a long chat's window moves on: webui/tabs/chat.py WINDOW_STEP.)
  new MutationObserver(() => {
    if (w.first !== null || w.t0 === null) return;
    const rows = box.querySelectorAll('[data-testid=user], [data-testid=bot]');
    const last = rows[rows.length - 1], asked = rows[rows.length - 2];
    if (!last || !asked || last.dataset.testid !== 'bot' || !asked.textContent.includes(sent)) return;
    const label = last.getAttribute('aria-label') || '';
    if (label.replace(/^bot's message: /, '').trim()) w.first = performance.now();
  }).observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (w.t0 !== null && e.startTime >= w.t0) w.longtasks.push(e.duration);
  }).observe({type: 'longtask'});
}"""


def history(n: int) -> list[dict[str, str]]:
    """n messages of a plausible chat: questions, and answers of a few sentences with some Markdown."""
    out = []
    for i in range(n // 2):
        out.append({"role": "user", "content": f"Question {i}: what should I know about topic number {i}?"})
        body = (
            f"Topic {i} is worth a **short** answer. It has a history, a few *common mistakes* and one "
            "practical tip that most people miss. "
        ) * 2
        if i % 10 == 0:
            body += "\n\n- first point\n- second point\n- `code` point"
        out.append({"role": "assistant", "content": body.strip()})
    return out


def chromium_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


def run(url: str, session_doc: Any, reps: int, log: Any = print) -> dict[str, Any]:
    """Samples per chat size: {"2": [...], "1000": [...]}; `session_doc(messages)` gives a session JSON."""
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {str(n): [] for n in SIZES}
    folder = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pages = {n: _open(browser, url, folder, n, session_doc(history(n))) for n in SIZES}
            for n in SIZES:  # one turn each first: the model's first evaluation of a new chat is not the UI's
                log(f"browser, {n} messages, warm-up: {_sample(pages[n], url, n, -1)}")
            for rep in range(reps):
                for n in SIZES if rep % 2 == 0 else tuple(reversed(SIZES)):
                    sample = _sample(pages[n], url, n, rep)
                    log(f"browser, {n} messages: {sample}")
                    out[str(n)].append(sample)
        finally:
            browser.close()
    return out


def _open(browser: Any, url: str, folder: Path, n: int, doc: Any) -> Any:
    """A page showing a new chat of `n` messages, uploaded through the chat tab."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(300_000)  # a 1000-message page on a busy 2-core machine is slow
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#message textarea")
    path = folder / f"chat-{n}.json"
    path.write_text(json.dumps(doc))
    page.locator("#chat-upload").locator("xpath=preceding-sibling::input[@type='file'][1]").set_input_files(
        str(path)
    )
    # a long chat shows its last rows (webui/tabs/chat.py WINDOW): wait for some of them
    page.wait_for_function(
        f"document.querySelectorAll('#chatbot [data-testid=bot]').length >= {min(n // 2, 10)}"
    )
    return page


def _sample(page: Any, url: str, n: int, rep: int) -> dict[str, Any]:
    shown = page.locator("#chatbot [data-testid=bot]").count()
    page.reload(wait_until="commit")
    page.wait_for_function(
        f"document.querySelectorAll('#chatbot [data-testid=bot]').length >= {shown} && "
        "/s-\\d{8}-/.test(document.querySelector('#status-line')?.innerText || '')",
        polling=20,
    )
    load_ms = page.evaluate("performance.now()")
    sent = f"Write a short story about lighthouse keeper number {rep}."
    page.evaluate(WATCH, sent)
    box = page.locator("#message textarea")
    box.fill(sent)
    started = time.perf_counter()
    box.press("Enter")
    page.wait_for_function("window.__bench.first !== null", polling=20)
    page.wait_for_function(  # the turn ended: the chatbot's progress tracker is hidden again
        "document.querySelector('#chatbot > [data-testid=status-tracker]')?.classList.contains('hide')",
        polling=50,
    )
    w = page.evaluate("window.__bench")
    tasks = w["longtasks"]
    return {
        "messages": n,
        "page_load_ms": round(load_ms, 1),
        "first_text_ms": round(w["first"] - w["t0"], 1),
        "stream_s": round(time.perf_counter() - started, 2),
        "longtask_max_ms": round(max(tasks), 1) if tasks else 0.0,
        "longtask_total_ms": round(sum(tasks), 1),
        "longtasks": len(tasks),
    }
