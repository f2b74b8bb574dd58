"""Show untrusted text (model replies, character cards, chat titles) as text in Markdown components.

Gradio's Markdown and Chatbot sanitize HTML but still render harmless-looking tags: `<img src=x>` becomes an
element that fetches a URL. We escape what could start a tag or an entity outside code, so Markdown still
renders (bold, lists, code blocks) and code keeps its `<` and `&` (Markdown escapes code itself).
`unescape_text` reverses `escape_text` exactly, for the chatbot's edit box.
"""

from __future__ import annotations

import html
import re

import gradio as gr

# fenced blocks (an unclosed fence runs to the end, as Markdown renders it) and inline code spans
_CODE = re.compile(
    r"(^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\2[ \t]*$|\Z)"  # a fence, to its closing fence or the end
    r"|(`+)(?!`).+?(?<!`)\3(?!`))",  # a code span
    re.M | re.S,
)
_TAG = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#\d+;|#[xX][0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)")
_UN_TAG = re.compile(r"&lt;(?=[A-Za-z/!?])")
_UN_ENTITY = re.compile(r"&amp;(?=#\d+;|#[xX][0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)")


def _outside_code(text: str, fn: object) -> str:
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(fn(text[pos : m.start()]))  # type: ignore[operator]
        out.append(m.group(0))
        pos = m.end()
    out.append(fn(text[pos:]))  # type: ignore[operator]
    return "".join(out)


def _esc(part: str) -> str:
    return _TAG.sub("&lt;", _ENTITY.sub("&amp;", part))


def _unesc(part: str) -> str:
    return _UN_ENTITY.sub("&", _UN_TAG.sub("<", part))


def escape_text(text: str) -> str:
    """Markdown that shows `text` literally wherever it could have been HTML."""
    return _outside_code(text, _esc) if ("<" in text or "&" in text) else text


def unescape_text(text: str) -> str:
    return _outside_code(text, _unesc) if "&" in text else text


def plain(text: object) -> str:
    """Text for a toast (gr.Info / gr.Warning), which Gradio renders as HTML: a title from an imported file
    must show as text, not become an element."""
    return html.escape(str(text), quote=False)


def notify(message: object) -> None:
    """gr.Info, shown as text. Every toast goes through here or `warn`: titles, names and error messages
    come from users' files."""
    gr.Info(plain(message))


def warn(message: object) -> None:
    """gr.Warning, shown as text (see `notify`)."""
    gr.Warning(plain(message))
