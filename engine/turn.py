"""`Runtime.turn()`: the one way to run a turn, from every interface.

A `Turn` is checked when it is made (backend, messages, preset, persona, params, session and mode): a bad
request raises the engine's own error at once, before any response is sent. The prompt is assembled in one
place (`chat_prompt.build_prompt`, through `conversation`). Iterating a Turn streams its events;
`.text()` and `.finished` serve callers that do not stream. A session's turn is saved as it completes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .backends.base import Delta, Finished, Message, Reasoning
from .characters import Character
from .chat import Notice, StreamEvent, validate_messages
from .chat_prompt import ChatOptions, PromptPlan
from .conversation import (
    message_index,
    new_session,
    run_turn,
    session_character,
    session_draft,
    stateless_plan,
    update_options,
    with_prefill,
)
from .errors import InvalidInput
from .params import SamplingParams
from .session_formats import ChatMessage, Session, now_iso

if TYPE_CHECKING:
    from .runtime import Runtime

Mode = Literal["send", "edit", "regenerate", "continue", "impersonate"]
MODES: tuple[str, ...] = ("send", "edit", "regenerate", "continue", "impersonate")


class Turn:
    """One turn of a chat, ready to run. Iterate it once for its events (`Queued`, `Reasoning`, `Delta`,
    `Notice`, one `Finished`), or call `.text()` for the whole reply."""

    def __init__(
        self,
        make: Callable[[threading.Event], Iterator[StreamEvent]],
        *,
        params: SamplingParams,
        session: Session | None = None,
        plan: PromptPlan | None = None,
        prompt: list[Message] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self._make = make
        self.params = params
        self.session = session
        self.plan = plan
        self.prompt = prompt  # what the model is sent (a session's is built when the turn starts)
        self.cancel = cancel or threading.Event()
        self.finished: Finished | None = None
        self.warnings: list[str] = []
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._events: Iterator[StreamEvent] | None = None

    @property
    def session_id(self) -> str | None:
        return self.session.id if self.session is not None else None

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._events is not None:
            raise RuntimeError("A Turn runs once.")
        self._events = self._make(self.cancel)
        try:
            for event in self._events:
                if isinstance(event, Delta):
                    self._text.append(event.text)
                elif isinstance(event, Reasoning):
                    self._reasoning.append(event.text)
                elif isinstance(event, Notice) and event.message not in self.warnings:
                    self.warnings.append(event.message)
                elif isinstance(event, Finished):
                    self.finished = event
                yield event
        finally:
            self.close()

    def text(self) -> str:
        """The whole reply (runs the turn to its end first, if it has not run)."""
        if self._events is None:
            for _ in self:
                pass
        return "".join(self._text)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    def stop(self) -> None:
        """Ask the turn to stop; the reply so far is kept (and saved, with a session)."""
        self.cancel.set()

    def close(self) -> None:
        """End the turn now; a session's partial reply is saved."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()


def start_turn(
    rt: Runtime,
    messages: Sequence[Message] | None = None,
    *,
    session: Session | str | None = None,
    mode: Mode = "send",
    user_text: str | None = None,
    preset: str | Character | None = None,
    params: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    cancel: threading.Event | None = None,
    index: int | None = None,
) -> Turn:
    """Check a turn and return it, ready to run. See `Runtime.turn`."""
    if mode not in MODES:
        raise InvalidInput(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.", field="mode")
    if session is None:
        return _stateless(rt, list(messages or []), mode, preset, params, options, cancel)
    if session == "new":
        session = _new_session(rt, list(messages or []), preset, params, options)
    elif isinstance(session, str):
        session = rt.sessions.get(session)
    if mode == "send" and user_text is None and messages:
        user_text = _last_user_text(list(messages))  # the turn to send is the last message
    return _in_session(rt, session, mode, user_text, params, options, cancel, index)


def _stateless(
    rt: Runtime,
    messages: list[Message],
    mode: Mode,
    preset: str | Character | None,
    params: dict[str, Any] | None,
    options: dict[str, Any] | None,
    cancel: threading.Event | None,
) -> Turn:
    """`messages` is the whole conversation; nothing is saved."""
    if mode in ("regenerate", "continue") and not (messages and messages[-1]["role"] == "assistant"):
        raise InvalidInput(f"There is no assistant reply to {mode}.", field="messages")
    msgs = validate_messages(messages) if messages or mode != "impersonate" else []
    plan, prompt, sampling = stateless_plan(
        rt,
        msgs,
        preset=preset,
        options=options,
        params=params,
        mode="normal" if mode == "send" else mode,
    )
    rt.engine.require_backend()
    return Turn(
        lambda c: with_prefill(plan, rt.engine.stream(prompt, sampling, c)),
        params=sampling,
        plan=plan,
        prompt=prompt,
        cancel=cancel,
    )


def _last_user_text(messages: list[Message]) -> str:
    if not messages or messages[-1]["role"] != "user":
        raise InvalidInput("The last message must be the user's turn.", field="messages")
    text = str(messages[-1]["content"])
    if not text.strip():
        raise InvalidInput("The message is empty.", field="messages")
    return text


def _new_session(
    rt: Runtime,
    messages: list[Message],
    preset: str | Character | None,
    params: dict[str, Any] | None,
    options: dict[str, Any] | None,
) -> Session:
    """A session made from a whole conversation; its last message is the user's turn to send."""
    messages = validate_messages(messages)
    _last_user_text(messages)
    if isinstance(preset, Character):
        raise InvalidInput("A new session needs a saved preset's name.", field="preset")
    rt.params_for(rt.character(preset), params)  # unknown preset or bad params: nothing is saved
    rt.engine.require_backend()
    system = [str(m["content"]) for m in messages if m["role"] == "system"]
    session = new_session(
        rt,
        character=preset,
        system_prompt="\n\n".join(system) if system else None,
        params=params,
        greeting=False,
        options=ChatOptions(**(options or {})),
    )
    session.messages.extend(
        ChatMessage(
            role="user" if m["role"] == "user" else "assistant", content=str(m["content"]), time=now_iso()
        )
        for m in messages[:-1]
        if m["role"] != "system"
    )
    return session


def _in_session(
    rt: Runtime,
    session: Session,
    mode: Mode,
    user_text: str | None,
    params: dict[str, Any] | None,
    options: dict[str, Any] | None,
    cancel: threading.Event | None,
    index: int | None = None,
) -> Turn:
    if params is not None:
        rt.params_for(session_character(session), params)
    update_options(rt, session.model_copy(deep=True), options or {})  # refuse bad options now
    if mode in ("send", "edit") and not (user_text and user_text.strip()):
        raise InvalidInput("The message is empty.", field="messages")
    if mode == "edit":
        message_index(session, index, role="user")
    elif mode == "regenerate":
        message_index(session, index, role="assistant")
    elif mode == "continue" and not (session.messages and session.messages[-1].role == "assistant"):
        raise InvalidInput("This chat has no reply to continue.")
    rt.engine.require_backend()
    if mode == "impersonate":  # a draft of the user's next message: nothing is saved (no session on it)
        plan, sampling = session_draft(rt, session, options=options, params=params, mode="impersonate")
        return Turn(
            lambda c: with_prefill(plan, rt.engine.stream(plan.messages, sampling, c)),
            params=sampling,
            plan=plan,
            prompt=plan.messages,
            cancel=cancel,
        )
    sampling = rt.params_for(session_character(session), params if params is not None else session.params)

    def make(c: threading.Event) -> Iterator[StreamEvent]:
        return run_turn(
            rt,
            session,
            mode=mode,
            user_text=user_text,
            params=params,
            cancel=c,
            options=options,
            on_prompt=lambda prompt: setattr(turn, "prompt", prompt),
            index=index,
        )

    turn = Turn(make, params=sampling, session=session, cancel=cancel)
    return turn
