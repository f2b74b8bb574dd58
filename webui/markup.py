"""Show untrusted text (model replies, character cards, chat titles) safely in Gradio's Markdown views.

Every view goes through here: `escape_text` for text shown as Markdown (chat messages, the status line),
`plain_md` for text shown literally inside Markdown (names, titles in lists), `notify`/`warn` for toasts.

Gradio renders Markdown in the browser (marked), keeps any HTML tag in it and only strips scripts, so a
card greeting could show a form or a remote image. `escape_text` makes sure no tag written in the text can
render: every `<` that could open a tag becomes `&lt;`, except inside code, where Markdown shows it as is.
Code is found with a CommonMark parser (markdown-it-py), not a regex. Where the browser's Markdown could
disagree about what is code, the `<` is escaped too (it then shows as `&lt;`, which is ugly, never live):
  - an inline code span that a bare URL runs into (GFM autolinks can swallow its opening backtick);
  - a `<` that starts a line inside an inline code span (it could start an HTML block there);
  - a fence whose lines could close it early in another parser, or that sits in a blockquote;
  - indented code blocks.
"```mermaid" gets a backslash ("```\\mermaid"): Gradio turns such a fence into a diagram, whose labels
are live HTML. `unescape_text` reverses `escape_text` exactly, for the chatbot's edit box.
"""

from __future__ import annotations

import html
import re

import gradio as gr
from markdown_it import MarkdownIt
from markdown_it.token import Token

# What Markdown treats as code. No raw HTML or <autolinks>: after escaping there are none, so the parse
# of the escaped text has the same code as the parse of the original (`unescape_text` relies on it).
_MD = (
    MarkdownIt("commonmark", {"html": False})
    .enable(["table", "strikethrough"])  # the GFM parts that change what is code
    .disable(["autolink", "html_inline", "html_block"])
)

_TAG_CHAR = r"[A-Za-z/!?]"
_ENTITY_BODY = r"(?:#\d+;|#[xX][0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)"
# a raw character that needs escaping outside code, or (for unescape) one we escaped
_RAW = re.compile(rf"<(?={_TAG_CHAR})|&(?={_ENTITY_BODY})")
_ANY = re.compile(rf"&lt;(?={_TAG_CHAR})|&amp;(?={_ENTITY_BODY})|<(?={_TAG_CHAR})|&(?={_ENTITY_BODY})")
_MERMAID = re.compile(r"(`{3,}[ \t]*)(\\*)(mermaid)")
_UN_MERMAID = re.compile(r"(`{3,}[ \t]*)\\(\\*)(mermaid)")
_LINE_START = re.compile(r"[ \t>*+\-\d.)]*")  # what may precede a character that starts its line
_FENCE_LIKE = re.compile(r"^[ \t>]*[`~]{3,}")
_URL_START = ("://", "www.")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_WHITESPACE = re.compile(r"\s")
_SENTINEL_BASE = 0xF0000  # Unicode private use: no Markdown meaning, not whitespace, not punctuation
_MAX_SENTINELS = 0x10FFFD - _SENTINEL_BASE


def escape_text(text: str) -> str:
    """Markdown that shows `text` as written wherever it could have been HTML."""
    text = _MERMAID.sub(r"\1\\\2\3", text) if "mermaid" in text else text
    if "<" not in text and "&" not in text:
        return text
    return _rewrite(text, _RAW, escape=True)


def unescape_text(text: str) -> str:
    if "&" in text:
        text = _rewrite(text, _ANY, escape=False)
    return _UN_MERMAID.sub(r"\1\2\3", text) if "mermaid" in text else text


def _rewrite(text: str, pattern: re.Pattern[str], *, escape: bool) -> str:
    """Escape (or unescape) every match of `pattern` that is not inside code that renders its `<` as is."""
    matches = list(pattern.finditer(text))
    if not matches:
        return text
    kept = _in_code(text, matches) if len(matches) <= _MAX_SENTINELS else set()
    out, pos = [], 0
    for i, m in enumerate(matches):
        out.append(text[pos : m.start()])
        out.append(m.group(0) if i in kept else _flip(m.group(0), escape))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _flip(s: str, escape: bool) -> str:
    if escape:
        return "&lt;" if s == "<" else "&amp;"
    return {"&lt;": "<", "&amp;": "&"}.get(s, s)  # a raw one (only ever in code) stays


def _in_code(text: str, matches: list[re.Match[str]]) -> set[int]:
    """Indexes of the matches that sit in code which every Markdown renderer shows as code.

    Each match is replaced by its own private-use character, which has no meaning to Markdown, and the
    result is parsed: the characters found in code tokens are the matches in code.
    """
    parts, pos = [], 0
    for i, m in enumerate(matches):
        parts.append(text[pos : m.start()])
        parts.append(chr(_SENTINEL_BASE + i))
        pos = m.end()
    parts.append(text[pos:])
    view = "".join(parts)
    lines = _NEWLINE.split(view)
    found: set[int] = set()
    for token in _MD.parse(view):
        if token.type == "fence" and _clean_fence(token, lines):
            found.update(_sentinels(token.content))
        elif token.type == "inline" and token.children:
            inline = _inline_code(token.children)
            found.update(i for i in inline if not _starts_line(text, matches[i].start()))
    return found


def _sentinels(s: str) -> list[int]:
    return [ord(c) - _SENTINEL_BASE for c in s if ord(c) >= _SENTINEL_BASE]


def _clean_fence(token: Token, lines: list[str]) -> bool:
    """A fence that other parsers also end where CommonMark does: not in a blockquote, its lines all
    indented like its opening line (spaces only), and no line inside it that looks like a fence."""
    if token.map is None:
        return False
    first, end = token.map
    opening = lines[first]
    indent = opening[: len(opening) - len(opening.lstrip(" "))]
    if not opening[len(indent) :].startswith(("```", "~~~")):
        return False  # in a blockquote or a list item's first line, or indented with tabs
    closing = re.compile(rf"[ \t]*{re.escape(token.markup[0])}{{{len(token.markup)},}}[ \t]*")
    for n in range(first + 1, min(end, len(lines))):
        line = lines[n]
        if n == end - 1 and closing.fullmatch(line):
            break  # the closing fence
        if line.strip() and (not line.startswith(indent) or _FENCE_LIKE.match(line)):
            return False
    return True


def _inline_code(children: list[Token]) -> list[int]:
    """Sentinels in code spans, except spans that a bare URL before them could run into."""
    found: list[int] = []
    run = ""  # the text since the last whitespace, where a GFM autolink could start
    for child in children:
        if child.type in ("softbreak", "hardbreak"):
            run = ""
            continue
        piece = child.content or child.markup
        if child.type == "code_inline" and not any(u in run.lower() for u in _URL_START):
            found.extend(_sentinels(piece))
        run = _WHITESPACE.split(run + piece)[-1]
    return found


def _starts_line(text: str, pos: int) -> bool:
    """Only blanks and list or quote markers before `pos` on its line."""
    start = max(text.rfind("\n", 0, pos), text.rfind("\r", 0, pos)) + 1
    return _LINE_START.fullmatch(text, start, pos) is not None


def plain_md(text: object) -> str:
    """`text` shown literally inside Markdown: every character that could format is backslashed."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text))


_MD_SPECIAL = set("\\`*_{}[]<>()#+-.!|~&")


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
