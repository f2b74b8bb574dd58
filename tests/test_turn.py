"""`Runtime.turn()`: eager checks, one prompt for every way in, saving, and the events, on a scripted
backend (milliseconds). The real model runs the same paths in test_engine_real, test_http and the rest."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine import (
    Delta,
    Finished,
    InvalidInput,
    ModelUnavailable,
    NotFound,
    Notice,
    Queued,
    Reasoning,
    Runtime,
    Turn,
)
from tests.scripted import ScriptedBackend, scripted_runtime

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def rt(tmp_path: Path, backend: ScriptedBackend) -> Runtime:
    rt = scripted_runtime(tmp_path / "data", backend, chat={"user_name": "Kenji"})
    char = rt.presets.get("friendly").model_copy(
        update={"system_prompt": "{{original}} You are {{char}}, talking with {{user}}."}
    )
    rt.presets.save(char)
    return rt


def test_a_stateless_turn_streams_and_keeps_the_whole_reply(rt: Runtime, backend: ScriptedBackend) -> None:
    backend.enqueue("Hi", " Kenji", reasoning=("let me think",))
    turn = rt.turn(HELLO)
    events = list(turn)
    assert [type(e) for e in events] == [Reasoning, Delta, Delta, Finished]
    assert turn.text() == "Hi Kenji" and turn.reasoning == "let me think"
    assert turn.finished is events[-1] and turn.session is None
    assert backend.prompts == [HELLO]  # no preset, no options: the messages go as they are
    with pytest.raises(RuntimeError):
        list(turn)  # a turn runs once


def test_text_runs_a_turn_that_was_not_iterated(rt: Runtime, backend: ScriptedBackend) -> None:
    backend.enqueue("Whole", " reply")
    turn = rt.turn(HELLO)
    assert turn.text() == "Whole reply"
    assert turn.finished is not None and turn.finished.finish_reason == "stop"


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"messages": []}, InvalidInput, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, InvalidInput, "role"),
        ({"messages": HELLO, "preset": "nobody"}, NotFound, "nobody"),
        ({"messages": HELLO, "params": {"temperature": 9}}, InvalidInput, "temperature"),
        ({"messages": HELLO, "params": {"warmth": 1}}, InvalidInput, "warmth"),
        ({"messages": HELLO, "options": {"persona": "ghost"}}, NotFound, "ghost"),
        ({"messages": HELLO, "mode": "shout"}, InvalidInput, "mode"),
        ({"messages": HELLO, "mode": "regenerate"}, InvalidInput, "regenerate"),
        ({"session": "new", "messages": [{"role": "assistant", "content": "hi"}]}, InvalidInput, "user"),
        ({"session": "new", "messages": [{"role": "user", "content": "  "}]}, InvalidInput, "empty"),
        ({"session": "s-20990101-000000-abcdef", "messages": HELLO}, NotFound, "20990101"),
    ],
)
def test_a_bad_turn_raises_when_it_is_made_and_saves_nothing(
    rt: Runtime, backend: ScriptedBackend, kwargs: dict, error: type, says: str
) -> None:
    messages = kwargs.pop("messages", None)
    with pytest.raises(error) as info:
        rt.turn(messages, **kwargs)
    assert says.lower() in info.value.message.lower()
    assert rt.sessions.list() == [] and backend.prompts == []


def test_no_model_is_refused_before_anything_is_saved(tmp_path: Path) -> None:
    rt = scripted_runtime(tmp_path / "data")
    rt.engine.backend = None
    rt.engine.load_error = "The model file is missing."
    for kwargs in ({}, {"session": "new"}, {"preset": "friendly"}):
        with pytest.raises(ModelUnavailable, match="missing"):
            rt.turn(HELLO, **kwargs)  # type: ignore[arg-type]
    assert rt.sessions.list() == []


def test_regenerate_and_continue_need_a_reply(rt: Runtime) -> None:
    session = rt.turn(HELLO, session="new")
    list(session)
    assert session.session is not None
    fresh = rt.turn([{"role": "user", "content": "x"}], session="new").session
    assert fresh is not None
    for mode in ("regenerate", "continue"):
        with pytest.raises(InvalidInput, match=mode):
            rt.turn(session=fresh, mode=mode)  # type: ignore[arg-type]
        rt.turn(session=session.session, mode=mode)  # type: ignore[arg-type]


def test_a_session_turn_is_saved_with_its_reply(rt: Runtime, backend: ScriptedBackend) -> None:
    backend.enqueue("First")
    turn = rt.turn(HELLO, session="new", preset="friendly")
    assert turn.session_id is not None and turn.prompt is None  # built when the turn starts
    assert turn.text() == "First"
    assert turn.prompt == backend.prompts[-1]
    saved = rt.sessions.get(turn.session_id)
    assert [(m.role, m.content) for m in saved.messages] == [("user", "Hello there"), ("assistant", "First")]
    backend.enqueue("Second")
    again = rt.turn(session=turn.session_id, mode="regenerate")
    assert again.text() == "Second"
    reply = rt.sessions.get(turn.session_id).messages[-1]
    assert reply.content == "Second" and len(reply.alternatives) == 2


def test_one_prompt_for_a_preset_with_and_without_a_session(rt: Runtime, backend: ScriptedBackend) -> None:
    chat = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! What do you need?"},
        {"role": "user", "content": "Tell me about tea."},
    ]
    rt.turn(chat, preset="friendly").text()
    rt.turn(chat, session="new", preset="friendly").text()
    stateless, in_session = backend.prompts
    assert stateless == in_session
    system = stateless[0]["content"]
    assert "talking with Kenji" in system  # {{user}} is the chat's user, not "User"
    assert rt.settings.chat.system_prompt.strip() in system  # {{original}} is the default prompt
    # the request's system messages replace the preset's prompt, all of them, in both
    with_system = [{"role": "system", "content": "Answer briefly."}, *chat[:2]]
    with_system += [{"role": "system", "content": "Stay in character."}, chat[2]]
    rt.turn(with_system, preset="friendly").text()
    rt.turn(with_system, session="new", preset="friendly").text()
    assert backend.prompts[2] == backend.prompts[3]
    assert backend.prompts[2][0]["content"].startswith("Answer briefly.\n\nStay in character.")


def test_every_reply_names_its_chat_for_the_kv_slot(rt: Runtime, backend: ScriptedBackend) -> None:
    """The backend learns which chat a reply belongs to (the session id; None without a session), so the
    worker's slots can show the chat each one holds (/api/health worker.slots[].chat)."""
    rt.turn(HELLO).text()
    turn = rt.turn(HELLO, session="new", preset="friendly")
    turn.text()
    sid = turn.session_id
    rt.turn(session=sid, mode="regenerate").text()
    rt.turn(session=sid, mode="impersonate").text()
    rt.turn(HELLO, characters=["friendly", "teacher"]).text()  # a stateless group chat
    assert backend.labels == [None, sid, sid, sid, None]


def test_a_draft_character_is_a_preset_too(rt: Runtime, backend: ScriptedBackend) -> None:
    draft = rt.presets.get("friendly").model_copy(update={"name": "draft", "title": "Draftee"})
    rt.turn(HELLO, preset=draft).text()
    assert "You are Draftee" in backend.prompts[-1][0]["content"]
    with pytest.raises(InvalidInput, match="saved preset"):
        rt.turn(HELLO, preset=draft, session="new")


def test_impersonate_drafts_the_user_and_saves_nothing(rt: Runtime, backend: ScriptedBackend) -> None:
    turn = rt.turn(HELLO, session="new", preset="friendly")
    turn.text()
    assert turn.session_id is not None
    before = rt.sessions.get(turn.session_id).messages
    backend.enqueue("What", " about", " coffee?")
    draft = rt.turn(session=turn.session_id, mode="impersonate")
    assert draft.text() == "What about coffee?"
    assert rt.sessions.get(turn.session_id).messages == before


def test_a_second_turn_on_a_busy_session_waits_then_keeps_both(rt: Runtime, backend: ScriptedBackend) -> None:
    first = rt.turn(HELLO, session="new")
    assert first.session_id is not None
    backend.gate = threading.Event()
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(first.text()))
    worker.start()
    second = rt.turn([{"role": "user", "content": "And then?"}], session=first.session_id)
    events = iter(second)
    assert isinstance(next(events), Queued)
    backend.gate.set()
    rest = list(events)
    worker.join(5)
    assert isinstance(rest[-1], Finished) and results == ["ok"]
    roles = [m.role for m in rt.sessions.get(first.session_id).messages]
    assert roles == ["user", "assistant", "user", "assistant"]


def test_stop_keeps_the_partial_reply(rt: Runtime, backend: ScriptedBackend) -> None:
    backend.enqueue("One", " two", " three")
    turn = rt.turn(HELLO, session="new")
    for event in turn:
        if isinstance(event, Delta):
            turn.stop()
    assert turn.finished is not None and turn.finished.finish_reason == "cancelled"
    assert turn.session_id is not None
    reply = rt.sessions.get(turn.session_id).messages[-1]
    assert reply.content == "One" and reply.stopped


def test_a_failed_save_is_a_notice_and_the_turn_goes_on(
    rt: Runtime, backend: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import StorageError

    turn = rt.turn(HELLO, session="new")

    def full_disk(*_a: object, **_k: object) -> None:
        raise StorageError("No space left on the device.")

    monkeypatch.setattr(rt.sessions, "save", full_disk)
    events = list(turn)
    assert any(isinstance(e, Notice) and "No space" in e.message for e in events)
    assert turn.text() == "ok" and "No space" in turn.warnings[0]


def test_turn_is_the_public_type(rt: Runtime) -> None:
    assert isinstance(rt.turn(HELLO), Turn)
