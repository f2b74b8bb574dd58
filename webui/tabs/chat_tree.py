"""What the chatbot shows of a session's message tree and of a group chat's speakers.

A message with versions gets a footer `◂ n/m ▸`; a group reply a header with its speaker's avatar and
name. Both are display only: they are added to the escaped text the chatbot shows, never stored, and
`plain_text` takes them off again (an edited message, and the browser tests reading the page).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine import Character, Session

from ..avatars import avatar_data_uri, character_avatar, placeholder_file
from ..i18n import tr
from ..markup import escape_text, plain_md, unescape_text

_FOOTER = re.compile(r"\n\n`◂ \d+/\d+ ▸`\Z")
_HEADER = re.compile(r"\A!\[avatar\]\(data:image/png;base64,[A-Za-z0-9+/=]*\) \*\*[^\n]*\*\*\n\n")


def versions_of(m: Any) -> tuple[int, int] | None:
    """(shown version from 1, how many) for a message with versions."""
    n = len(m.alternatives)
    return (m.version + 1, n) if n > 1 else None


def footer(m: Any) -> str:
    v = versions_of(m)
    return f"\n\n`◂ {v[0]}/{v[1]} ▸`" if v else ""


def speaker_heads(rt: Any, session: Session | None) -> dict[str, str]:
    """A group chat's header for each member's replies, by display name (what a reply's `name` holds)."""
    if session is None or not session.characters:
        return {}
    heads = {}
    for snapshot in session.characters:
        c = Character.model_validate(snapshot)
        image = avatar_data_uri(character_avatar(rt, c.name, c.display_name))
        heads[c.display_name] = f"![avatar]({image}) **{plain_md(c.display_name)}**\n\n"
    return heads


def header(m: Any, heads: Mapping[str, str] | None) -> str:
    if heads is None or m.role != "assistant" or not m.name:
        return ""
    if m.name not in heads:  # someone who left the group
        return f"![avatar]({avatar_data_uri(placeholder_file(m.name))}) **{plain_md(m.name)}**\n\n"
    return heads[m.name]


def shown(m: Any, heads: Mapping[str, str] | None = None) -> str:
    """What the chatbot shows of message `m`'s text."""
    return header(m, heads) + escape_text(m.content) + footer(m)


def plain_text(text: str) -> str:
    """The message text from what the chatbot shows (or an edit of it): no header, footer or escapes."""
    text = _FOOTER.sub("", text)
    if text.startswith("![avatar]("):
        text = _HEADER.sub("", text, count=1)
    return unescape_text(text)


def last_with_versions(session: Session) -> int | None:
    found = [i for i, m in enumerate(session.messages) if len(m.alternatives) > 1]
    return found[-1] if found else None


def selected_index(session: Session, selected: Any, role: str | None = None) -> int | None:
    """The message clicked last (`selected`: [session id, index]) if it is in this chat (and has `role`)."""
    if not (isinstance(selected, list | tuple) and len(selected) == 2 and selected[0] == session.id):
        return None
    k = selected[1]
    if not isinstance(k, int) or not 0 <= k < len(session.messages):
        return None
    return k if role is None or session.messages[k].role == role else None


def target(session: Session, selected: Any) -> int | None:
    """The message ◀ ▶ move through: the one clicked in this chat if it has versions, else the last one
    that has."""
    k = selected_index(session, selected)
    if k is not None and len(session.messages[k].alternatives) > 1:
        return k
    return last_with_versions(session)


def version_label(session: Session | None, index: int | None, lang: str | None) -> str:
    """For the status line: which version message `index` shows (default: the last with versions)."""
    if session is None:
        return ""
    k = index if index is not None else last_with_versions(session)
    if k is None or not 0 <= k < len(session.messages):
        return ""
    v = versions_of(session.messages[k])
    return tr("chat.version_of", lang, n=k + 1, v=v[0], m=v[1]) if v else ""
