"""The chat tab's Thinking row (webui/tabs/chat_thinking.py) on a scripted model: the choice is stored in the
chat where the Sampling tab keeps it, reaches the model on the next turn (the first one too, when it was made
before the chat existed), and a bad budget changes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from engine import Runtime, Session
from engine.conversation import new_session
from engine.params import PARAM_NAMES
from tests.scripted import ScriptedBackend, scripted_runtime
from webui.tabs.chat import ChatHandlers, load_session
from webui.tabs.chat_thinking import ThinkingHandlers
from webui.tabs.context import CUSTOM, UIContext
from webui.tabs.sampling import SamplingHandlers

PAGE = SimpleNamespace(session_hash="page-1")  # what the handlers read of gr.Request


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = scripted_runtime(tmp_path)
    yield runtime
    runtime.close()


def ui_context(rt: Runtime) -> UIContext:
    return UIContext(
        rt=rt, session_id=gr.BrowserState(), lang=gr.BrowserState(), custom_prompt=gr.BrowserState()
    )


def handlers(rt: Runtime) -> tuple[UIContext, ThinkingHandlers]:
    ctx = ui_context(rt)
    h = ThinkingHandlers(ctx, load_session)
    ctx.before_turn.append(h.carry)  # as chat_thinking.wire does
    return ctx, h


def send(ctx: UIContext, text: str, session_id: str | None) -> str:
    """The chat tab's Send (ChatHandlers.on_send) to the end; returns the chat's id."""
    options = ("", [], "", True)  # persona, lorebooks, reply prefix, show it
    group = (False, [], "natural", [], "join")  # off
    turn = ChatHandlers(ctx).on_send(text, session_id, CUSTOM, "en", None, *options, *group, None, PAGE)
    updates = list(turn)
    return str(updates[-1][1])


def stored(rt: Runtime, sid: str) -> Session:
    return rt.sessions.get(sid)


def test_a_choice_made_before_the_first_message_goes_into_the_chat_and_its_first_reply(rt: Runtime) -> None:
    ctx, h = handlers(rt)
    assert h.on_input("off", 7.0, None, CUSTOM, "en", PAGE) == (gr.skip(), gr.skip())
    assert h.refresh(None, CUSTOM, PAGE) == ("off", 7)  # the tab switch back shows the choice
    sid = send(ctx, "hello", None)
    backend = rt.engine.backend
    assert isinstance(backend, ScriptedBackend)
    assert backend.params[-1].thinking == "off" and backend.params[-1].thinking_budget == 7
    assert stored(rt, sid).params == {"thinking": "off", "thinking_budget": 7}
    assert h.pending == {}
    assert h.refresh(sid, CUSTOM, PAGE) == ("off", 7)
    send(ctx, "again", sid)  # the chat remembers it
    assert backend.params[-1].thinking == "off" and backend.params[-1].thinking_budget == 7


def test_new_chat_forgets_a_choice_for_the_chat_to_come(rt: Runtime) -> None:
    _, h = handlers(rt)
    h.on_input("on", None, None, CUSTOM, "en", PAGE)
    assert h.reset(None, CUSTOM, PAGE) == ("auto", None)
    assert h.pending == {}


def test_a_change_in_an_open_chat_is_what_the_sampling_tab_shows_and_the_next_turn_uses(rt: Runtime) -> None:
    ctx, h = handlers(rt)
    session = new_session(rt, params={"temperature": 0.3})
    h.on_input("on", 64, session.id, CUSTOM, "en", PAGE)
    doc = stored(rt, session.id)
    assert doc.params == {"temperature": 0.3, "thinking": "on", "thinking_budget": 64}
    sampling = SamplingHandlers(ctx)
    form = dict(zip(PARAM_NAMES, sampling.refresh(session.id, CUSTOM, "en"), strict=False))
    assert form["thinking"] == "on" and form["thinking_budget"] == 64 and form["temperature"] == 0.3
    send(ctx, "hi", session.id)
    backend = rt.engine.backend
    assert isinstance(backend, ScriptedBackend)
    assert backend.params[-1].thinking == "on" and backend.params[-1].thinking_budget == 64
    # back to the config's values: the chat keeps no override for them, as the Sampling tab's Apply would
    h.on_input("auto", None, session.id, CUSTOM, "en", PAGE)
    assert stored(rt, session.id).params == {"temperature": 0.3}
    # and what the Sampling tab saves is what the row shows
    doc = stored(rt, session.id)
    doc.params = {**doc.params, "thinking": "off"}
    rt.sessions.save(doc)
    assert h.refresh(session.id, CUSTOM, PAGE) == ("off", None)


@pytest.mark.parametrize("budget", [-1, 10**9, 2.5])
def test_an_out_of_range_budget_warns_and_changes_nothing(rt: Runtime, budget: Any) -> None:
    _, h = handlers(rt)
    session = new_session(rt, params={"thinking_budget": 32})
    before = stored(rt, session.id).updated_at
    with pytest.warns(UserWarning, match="0 to 131072"):
        shown = h.on_input("off", budget, session.id, CUSTOM, "en", PAGE)
    assert shown == ("auto", 32)  # the row shows what is in effect again
    doc = stored(rt, session.id)
    assert doc.params == {"thinking_budget": 32} and doc.updated_at == before
    with pytest.warns(UserWarning, match="0〜131072"):
        assert h.on_input("on", budget, None, CUSTOM, "ja", PAGE) == ("auto", None)
    assert h.pending == {}


def test_a_change_during_a_reply_is_saved_after_it_not_lost(rt: Runtime) -> None:
    ctx, h = handlers(rt)
    backend = rt.engine.backend
    assert isinstance(backend, ScriptedBackend)
    session = new_session(rt)
    backend.gate = threading.Event()
    turn = threading.Thread(target=send, args=(ctx, "a long one", session.id))
    turn.start()
    lock = rt.sessions.turn_lock(session.id)
    deadline = time.monotonic() + 10
    while not lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock.locked()
    change = threading.Thread(target=h.on_input, args=("off", None, session.id, CUSTOM, "en", PAGE))
    change.start()
    time.sleep(0.2)
    assert change.is_alive()  # it waits for the reply, whose own save would undo it
    backend.gate.set()
    turn.join(10)
    change.join(10)
    doc = stored(rt, session.id)
    assert doc.params == {"thinking": "off"}
    assert [m.role for m in doc.messages] == ["user", "assistant"] and doc.messages[-1].content == "ok"


def test_a_stale_choice_does_not_reach_a_chat_that_has_turns(rt: Runtime) -> None:
    ctx, h = handlers(rt)
    sid = send(ctx, "first", None)
    h.remember(PAGE.session_hash, {"thinking": "off", "thinking_budget": None})
    send(ctx, "second", sid)
    assert "thinking" not in stored(rt, sid).params and h.pending == {}
