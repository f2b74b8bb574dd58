"""The chat tab's branch actions and group buttons (webui/tabs/chat.py, chat_group.py, chat_files.py) on a
scripted model, through the handlers the page calls: Regenerate acts on the reply clicked last (the
chatbot's retry on the reply it is on), Branch from here makes a new version with the same text, each
group member's "Speak now" button makes that member answer, and the file buttons include SillyTavern JSONL.
The browser tests (tests/browser/test_branches_ui.py, test_chat_files.py) click the same things."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from engine import Runtime
from engine.st_chat import parse_st_jsonl
from tests.scripted import ScriptedBackend, scripted_runtime
from webui.tabs import chat_group
from webui.tabs.chat import ChatHandlers
from webui.tabs.chat_files import download_updates
from webui.tabs.context import CUSTOM, UIContext

PAGE = SimpleNamespace(session_hash="page-1")  # what the handlers read of gr.Request
OPTIONS = ("", [], "", True)  # persona, lorebooks, reply prefix, show it
NO_GROUP = (False, [], "natural", [], "join")
PAIR = ["friendly", "teacher"]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = scripted_runtime(tmp_path)
    yield runtime
    runtime.close()


def backend_of(rt: Runtime) -> ScriptedBackend:
    backend = rt.engine.backend
    assert isinstance(backend, ScriptedBackend)
    return backend


def chat_handlers(rt: Runtime) -> ChatHandlers:
    ctx = UIContext(
        rt=rt, session_id=gr.BrowserState(), lang=gr.BrowserState(), custom_prompt=gr.BrowserState()
    )
    return ChatHandlers(ctx)


def four_messages(rt: Runtime, h: ChatHandlers) -> str:
    """A chat of: What is tea? / Tea is a drink. / And coffee? / Coffee is too."""
    backend = backend_of(rt)
    backend.enqueue("Tea is a drink.")
    first = list(h.on_send("What is tea?", None, CUSTOM, "en", None, *OPTIONS, *NO_GROUP, None, PAGE))
    sid = str(first[-1][1])
    backend.enqueue("Coffee is too.")
    list(h.on_send("And coffee?", sid, CUSTOM, "en", None, *OPTIONS, *NO_GROUP, None, PAGE))
    return sid


def contents(rt: Runtime, sid: str) -> list[str]:
    return [m.content for m in rt.sessions.get(sid).messages]


def shown(updates: list[Any]) -> list[str]:
    """The chatbot's rows in the last update."""
    view = updates[-1][0]
    rows = view["value"] if isinstance(view, dict) else view
    return [r["content"] for r in rows]


def test_regenerate_makes_a_new_version_of_the_reply_clicked_last(rt: Runtime) -> None:
    h = chat_handlers(rt)
    sid = four_messages(rt, h)
    details, selected, status = h.on_select(gr.SelectData(None, {"index": 1, "value": ""}), sid, "en")
    assert selected == [sid, 1] and details["message"] == 2 and "Message 2 selected" in status
    backend_of(rt).enqueue("Tea is made from leaves.")
    updates = list(h.on_mode("regenerate")(sid, selected, "en", PAGE))
    assert contents(rt, sid) == ["What is tea?", "Tea is made from leaves."]
    assert shown(updates)[-1].endswith("`◂ 2/2 ▸`")
    assert backend_of(rt).prompts[-1][-1] == {"role": "user", "content": "What is tea?"}
    rt.select_version(sid, 1, 0)  # the later messages stayed with version 1
    assert contents(rt, sid) == ["What is tea?", "Tea is a drink.", "And coffee?", "Coffee is too."]
    # a user message clicked (or none): the last reply, as before
    backend_of(rt).enqueue("Coffee is bitter.")
    list(h.on_mode("regenerate")(sid, [sid, 2], "en", PAGE))
    assert contents(rt, sid)[1:] == ["Tea is a drink.", "And coffee?", "Coffee is bitter."]
    assert len(rt.sessions.get(sid).messages[1].alternatives) == 2


def test_the_chatbots_retry_regenerates_the_reply_it_is_on(rt: Runtime) -> None:
    h = chat_handlers(rt)
    sid = four_messages(rt, h)
    backend_of(rt).enqueue("Tea is made from leaves.")
    list(h.on_retry(gr.RetryData(None, {"index": 1, "value": ""}), sid, "en", PAGE))
    assert contents(rt, sid) == ["What is tea?", "Tea is made from leaves."]
    backend_of(rt).enqueue("Tea is a leaf brew.")
    list(h.on_retry(gr.RetryData(None, {"index": 0, "value": ""}), sid, "en", PAGE))  # a user row
    assert contents(rt, sid) == ["What is tea?", "Tea is a leaf brew."]  # the last reply
    assert len(rt.sessions.get(sid).messages[1].alternatives) == 3


def test_branch_from_here_keeps_the_message_and_starts_a_new_branch(rt: Runtime) -> None:
    h = chat_handlers(rt)
    sid = four_messages(rt, h)
    backend = backend_of(rt)
    with pytest.warns(UserWarning, match="Click a message"):
        assert list(h.on_branch(sid, [None, None], None, "en", PAGE)) == [gr.skip()]
    asked = len(backend.prompts)
    updates = list(h.on_branch(sid, [sid, 1], None, "en", PAGE))  # a reply: nothing is generated
    assert len(backend.prompts) == asked
    assert contents(rt, sid) == ["What is tea?", "Tea is a drink."]
    m = rt.sessions.get(sid).messages[1]
    assert (len(m.alternatives), m.version) == (2, 1)
    assert shown(updates)[-1].endswith("`◂ 2/2 ▸`") and "version ◂ 2/2 ▸" in updates[-1][2]
    backend.enqueue("Milk goes well with tea.")
    list(h.on_send("Milk?", sid, CUSTOM, "en", None, *OPTIONS, *NO_GROUP, None, PAGE))
    assert contents(rt, sid) == ["What is tea?", "Tea is a drink.", "Milk?", "Milk goes well with tea."]
    rt.select_version(sid, 1, 0)
    assert contents(rt, sid)[2:] == ["And coffee?", "Coffee is too."]  # the old branch is whole

    backend.enqueue("Coffee is a bean.")  # a user message: its new version gets a new reply
    list(h.on_branch(sid, [sid, 2], None, "en", PAGE))
    assert contents(rt, sid)[2:] == ["And coffee?", "Coffee is a bean."]
    assert len(rt.sessions.get(sid).messages[2].alternatives) == 2
    rt.select_version(sid, 2, 0)
    assert contents(rt, sid)[2:] == ["And coffee?", "Coffee is too."]


def test_each_group_member_has_a_speak_now_button(rt: Runtime) -> None:
    h = chat_handlers(rt)
    backend = backend_of(rt)
    group = (True, PAIR, "natural", [], "join")
    backend.enqueue("Patient Teacher: Class begins.")
    first = list(h.on_speak_as(1)(None, CUSTOM, "en", None, *OPTIONS, *group, PAGE))  # a new group chat
    sid = str(first[-1][1])
    backend.enqueue("Hello, class.")
    list(h.on_speak_as(0)(sid, CUSTOM, "en", None, *OPTIONS, *group, PAGE))
    messages = rt.sessions.get(sid).messages
    assert [(m.name, m.content) for m in messages] == [
        ("Patient Teacher", "Class begins."),
        ("Friendly Assistant", "Hello, class."),
    ]
    with pytest.warns(UserWarning, match="Pick who speaks"):
        assert list(h.on_speak_as(5)(sid, CUSTOM, "en", None, *OPTIONS, *group, PAGE)) == [gr.skip()]
    # the buttons show the members, in order; the rest are hidden
    buttons = chat_group.values(h.ctx, rt.sessions.get(sid))[-chat_group.SPEAK_BUTTONS :]
    assert [b.get("value") for b in buttons[:2]] == ["Friendly Assistant", "Patient Teacher"]
    assert [b["visible"] for b in buttons] == [True, True] + [False] * (chat_group.SPEAK_BUTTONS - 2)


def test_the_file_buttons_include_sillytavern_jsonl(rt: Runtime) -> None:
    h = chat_handlers(rt)
    sid = four_messages(rt, h)
    backend_of(rt).enqueue("Tea is made from leaves.")
    list(h.on_mode("regenerate")(sid, [sid, 1], "en", PAGE))
    json_file, md_file, st_file = download_updates(h.ctx, sid)
    assert st_file["interactive"] and st_file["value"].endswith(f"{sid}.jsonl")
    doc = parse_st_jsonl(Path(st_file["value"]).read_bytes())
    assert [m["content"] for m in doc["messages"]] == ["What is tea?", "Tea is made from leaves."]
    assert Path(json_file["value"]).read_bytes() == rt.sessions.export_bytes(sid)
    assert [u["interactive"] for u in download_updates(h.ctx, None)] == [False, False, False]
