"""The Japanese UI renders real glyphs, not tofu boxes: screenshots of every tab go to
test-artifacts/japanese-ui/ on every run, for checking by eye. Needs Debian's fonts-noto-cjk
(scripts/ensure_chromium.sh installs it with Chromium)."""

from __future__ import annotations

from typing import Any

from tests.browser.harness import artifact_dir
from tests.browser.ui import ChatPage

TABS = [
    ("チャット", "chat"),
    ("キャラクター", "characters"),
    ("ロアブック", "lore"),
    ("ツール", "tools"),
    ("サンプリング", "sampling"),
    ("履歴", "history"),
]

# Width of `el`'s text against the same number of missing-glyph boxes in the same font (U+0378 is an
# unassigned code point, so every font draws it as its box), and whether the characters' bitmaps differ
# from one another (tofu boxes are all alike).
MEASURE = """(el) => {
  const cs = getComputedStyle(el);
  const text = el.textContent.trim();
  const n = [...text].length;
  const span = (s) => {
    const e = document.createElement('span');
    e.style.font = cs.font; e.style.whiteSpace = 'pre'; e.style.position = 'absolute';
    e.textContent = s; document.body.appendChild(e);
    const w = e.getBoundingClientRect().width; e.remove(); return w;
  };
  const size = Math.ceil(parseFloat(cs.fontSize) * 2);
  const bitmap = (ch) => {
    const c = document.createElement('canvas'); c.width = size; c.height = size;
    const g = c.getContext('2d'); g.font = cs.font; g.textBaseline = 'top'; g.fillText(ch, 0, 0);
    return Array.from(g.getImageData(0, 0, size, size).data).join(',');
  };
  const maps = [...text].map(bitmap);
  return {text, width: span(text), tofu: span('\\u0378'.repeat(n)), distinct: new Set(maps).size, n};
}"""


def _measure(chat: ChatPage, selector: str) -> dict[str, Any]:
    return dict(chat.page.locator(selector).first.evaluate(MEASURE))


def test_japanese_labels_render_glyphs_and_are_screenshotted(chat: ChatPage) -> None:
    folder = artifact_dir("japanese-ui")
    chat.page.locator("#lang-switch label", has_text="日本語").click()
    chat.wait_for(lambda: chat.page.locator("#send").inner_text().strip() == "送信", "Japanese labels")
    chat.wait_for(lambda: chat.page.get_by_role("tab", name="履歴").count() == 1, "every tab in Japanese")
    chat.page.evaluate("document.fonts.ready")

    label = _measure(chat, "#lang-switch label:has-text('日本語') span")
    assert label["text"] == "日本語", label
    assert label["distinct"] == label["n"], f"the glyphs of {label['text']} are all alike (tofu): {label}"
    assert label["width"] > 1.2 * label["tofu"], f"{label['text']} is as narrow as tofu boxes: {label}"
    button = _measure(chat, "#send")
    assert button["distinct"] == button["n"] and button["width"] > 1.2 * button["tofu"], button

    for name, slug in TABS:
        chat.open_tab(name)
        chat.page.wait_for_timeout(300)
        chat.page.screenshot(path=str(folder / f"{slug}.png"), full_page=True)
    chat.open_tab("GPU とモデル")
    chat.page.locator("#gpu-summary").wait_for()
    chat.page.screenshot(path=str(folder / "gpu.png"), full_page=True)
    for _, slug in [*TABS, ("", "gpu")]:
        assert (folder / f"{slug}.png").stat().st_size > 10_000, f"{slug}.png looks empty"
