"""Turns inside a saved session: send, regenerate, continue. Every turn is saved as it completes,
and the partial reply is saved every few seconds while it streams."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from .backends.base import Delta, Finished, Message
from .characters import Character
from .chat import Notice, Queued, StreamEvent
from .errors import BackendError, InvalidInput, StorageError
from .prompt import assemble, greetings
from .runtime import Runtime
from .session_formats import ChatMessage, ModelInfo, Session, now_iso
from .template_rules import rules_for

Mode = Literal["send", "regenerate", "continue"]
PARTIAL_SAVE_S = 2.0


def session_character(session: Session) -> Character | None:
    return Character.model_validate(session.character) if session.character else None


def new_session(
    rt: Runtime,
    *,
    character: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
    greeting: bool = True,
) -> Session:
    """A fresh session with the character snapshot, its sampling and its greeting."""
    char = rt.character(character)
    merged = {**(char.sampling if char else {}), **(params or {})}
    rt.params_for(char, merged)  # validate before anything is saved
    messages = []
    if greeting and char:
        opening = greetings(char, rt.settings.chat.user_name)
        if opening and opening[0]:
            messages.append(ChatMessage(role="assistant", content=opening[0], time=now_iso(), greeting=True))
    return rt.sessions.create(
        character=char.model_dump() if char else None,
        character_name=char.name if char else None,
        system_prompt=system_prompt,
        params=merged,
        messages=messages,
        model=_model_info(rt),
    )


def _model_info(rt: Runtime) -> ModelInfo | None:
    backend = rt.engine.backend
    path = getattr(backend, "path", None)
    try:
        return ModelInfo.from_path(path) if path else None
    except OSError:
        return None


def prompt_messages(rt: Runtime, session: Session, history: list[ChatMessage]) -> list[Message]:
    return assemble(
        session_character(session),
        [{"role": m.role, "content": m.content} for m in history],
        system_prompt=session.system_prompt,
        default_system_prompt=rt.settings.chat.system_prompt,
        user_name=rt.settings.chat.user_name,
        assistant_name=rt.settings.chat.assistant_name,
        rules=rules_for(rt.engine.backend),
    )


def run_turn(
    rt: Runtime,
    session: Session,
    *,
    mode: Mode = "send",
    user_text: str | None = None,
    params: dict[str, Any] | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[StreamEvent]:
    """Stream one assistant turn into `session`, saving as it goes. The session object is updated in place.

    Turns on one session run one after the other: a second turn waits (a Queued event) until the first is
    saved, then continues from the session as the first left it, so both replies are kept.
    """
    cancel = cancel or threading.Event()
    lock = rt.sessions.turn_lock(session.id)
    if not lock.acquire(blocking=False):
        yield Queued(1)
        while not lock.acquire(timeout=0.1):
            if cancel.is_set():
                yield Finished("cancelled")
                return
    try:
        rt.sessions.refresh(session)
        yield from _run_turn(rt, session, mode=mode, user_text=user_text, params=params, cancel=cancel)
    finally:
        lock.release()


def _run_turn(
    rt: Runtime,
    session: Session,
    *,
    mode: Mode,
    user_text: str | None,
    params: dict[str, Any] | None,
    cancel: threading.Event,
) -> Iterator[StreamEvent]:
    if params is not None:
        rt.params_for(session_character(session), params)
        session.params = dict(params)
    sampling = rt.params_for(session_character(session), session.params)
    now = now_iso()
    if mode == "send":
        if not user_text or not user_text.strip():
            raise InvalidInput("The message is empty.", field="messages")
        _drop_interrupted_reply(session)
        session.messages.append(ChatMessage(role="user", content=user_text, time=now))
        history = list(session.messages)
        reply = ChatMessage(role="assistant", content="", time=now)
        session.messages.append(reply)
        prefix = ""
    else:
        if not session.messages or session.messages[-1].role != "assistant":
            raise InvalidInput(f"There is no assistant reply to {mode}.")
        reply = session.messages[-1]
        history = session.messages[:-1]
        if mode == "regenerate":
            reply.new_version(now)
            prefix = ""
        else:
            prefix = reply.content
            history = [*history, ChatMessage(role="assistant", content=prefix, time=reply.time)]
    messages = prompt_messages(rt, session, history)
    reply.interrupted = None
    reply.stopped = True  # until the turn completes, what is on disk is partial
    yield from _save(rt, session)
    reply.stopped = False
    text, last_save = prefix, time.monotonic()
    reason = "stop"
    completed = False
    try:
        for event in rt.engine.stream(messages, sampling, cancel):
            if isinstance(event, Delta):
                text += event.text
                reply.content = text
                if time.monotonic() - last_save > PARTIAL_SAVE_S:
                    reply.stopped = True  # until the turn completes, what is on disk is partial
                    yield from _save(rt, session)
                    reply.stopped = False
                    last_save = time.monotonic()
            elif isinstance(event, Finished):
                reason = event.finish_reason
                reply.metrics = {**event.metrics.to_dict(), "finish_reason": reason}
                completed = True
                _finish(session, reply, text, stopped=reason == "cancelled" or cancel.is_set(), mode=mode)
                yield from _save(rt, session, allow_shrink=True)
            yield event
    except BackendError as exc:  # the model process crashed: the reply so far is kept, flagged
        reply.interrupted = exc.message
        raise
    finally:
        if not completed:  # an error or a client that went away: keep what was generated
            _finish(session, reply, text, stopped=True, mode=mode)
            with contextlib.suppress(StorageError):  # nobody is listening to be told
                rt.sessions.save(session, allow_shrink=True)


def _drop_interrupted_reply(session: Session) -> None:
    """An empty reply that never finished (the server died before its first token) is dropped before the
    next turn, as `_finish` drops an empty reply, so it does not teach the model to answer with nothing."""
    last = session.messages[-1] if session.messages else None
    interrupted = last is not None and last.role == "assistant" and not (last.content or last.metrics)
    if interrupted and last is not None and not (last.alternatives or last.greeting):
        session.messages.pop()


def _finish(session: Session, reply: ChatMessage, text: str, *, stopped: bool, mode: Mode) -> None:
    reply.content = text
    reply.stopped = stopped
    reply.sync()
    if mode == "send" and not text and session.messages and session.messages[-1] is reply:
        session.messages.pop()  # nothing was generated: keep the user turn only


def _save(rt: Runtime, session: Session, *, allow_shrink: bool = False) -> Iterator[Notice]:
    try:
        rt.sessions.save(session, allow_shrink=allow_shrink)
    except StorageError as exc:
        yield Notice("warning", f"Could not save the chat: {exc.message} The chat stays open in memory.")
