"""The chat tab's display of the message tree and of group speakers (webui/tabs/chat_tree.py): the
footer and header are display only, and plain_text takes them off exactly."""

from __future__ import annotations

from engine import ChatMessage, Session
from webui.tabs import chat_tree


def _branched(content: str, role: str = "assistant") -> ChatMessage:
    m = ChatMessage(role=role, content="first")  # type: ignore[arg-type]
    m.branch(content)
    return m


def _session(*messages: ChatMessage) -> Session:
    t = "2025-01-01T00:00:00Z"
    return Session(id="s-20250101-000000-abcdef", created_at=t, updated_at=t, messages=list(messages))


def test_a_message_with_versions_shows_which_and_the_text_comes_back_unchanged() -> None:
    m = _branched("a <b>bold</b> & `code`\n\nend")
    shown = chat_tree.shown(m)
    assert shown.endswith("\n\n`◂ 2/2 ▸`")
    assert chat_tree.plain_text(shown) == m.content
    plain = ChatMessage(role="user", content="no versions")
    assert chat_tree.shown(plain) == "no versions" and chat_tree.plain_text("no versions") == "no versions"


def test_a_group_reply_shows_its_speaker_and_the_header_comes_off() -> None:
    m = ChatMessage(role="assistant", content="**Bold** start", name="Patient Teacher")
    heads = {"Patient Teacher": "![avatar](data:image/png;base64,AAAA+/=) **Patient Teacher**\n\n"}
    shown = chat_tree.shown(m, heads)
    assert shown.startswith("![avatar](data:image/png;base64,") and "**Patient Teacher**" in shown
    assert chat_tree.plain_text(shown) == "**Bold** start"
    assert chat_tree.plain_text("**Bold** start") == "**Bold** start"  # a user's bold line stays


def test_arrows_move_through_the_clicked_message_else_the_last_with_versions() -> None:
    s = _session(_branched("u", "user"), _branched("a"), ChatMessage(role="user", content="x"))
    assert chat_tree.target(s, [s.id, 0]) == 0
    assert chat_tree.target(s, [s.id, 2]) == 1  # no versions: the last message that has some
    assert chat_tree.target(s, ["s-20250101-000000-ffffff", 0]) == 1  # clicked in another chat
    assert chat_tree.target(s, [None, None]) == 1
    assert "Message 1: version ◂ 2/2 ▸" in chat_tree.version_label(s, 0, "en")
    assert chat_tree.version_label(s, 2, "en") == ""
