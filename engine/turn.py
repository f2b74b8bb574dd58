"""`Runtime.turn()`: the one way to run a turn, from every interface.

A `Turn` is checked when it is made (backend, messages, preset, persona, params, session and mode): a bad
request raises the engine's own error at once, before any response is sent. The prompt is assembled in one
place (`chat_prompt.build_prompt`, through `conversation`). Iterating a Turn streams its events;
`.text()` and `.finished` serve callers that do not stream. A session's turn is saved as it completes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from .backends.base import Cancel, Delta, Finished, Message, Reasoning, ToolCall, ToolResult
from .characters import Character
from .chat import Notice, StreamEvent, validate_messages
from .chat_prompt import ChatOptions, PromptPlan, check_options
from .conversation import Mode as SessionMode
from .conversation import (
    message_index,
    new_session,
    reply_stream,
    run_turn,
    session_character,
    session_draft,
    session_plan,
    stateless_plan,
    update_options,
    with_prefill,
)
from .errors import InvalidInput
from .group_turns import check_group, check_speaker, choose_speaker, is_group
from .params import SamplingParams
from .session_formats import ChatMessage, Session, now_iso

if TYPE_CHECKING:
    from .runtime import Runtime
    from .tools.loop import Approve, ToolOffer

Mode = Literal["send", "edit", "regenerate", "continue", "impersonate"]
MODES: tuple[str, ...] = ("send", "edit", "regenerate", "continue", "impersonate")


class Turn:
    """One turn of a chat, ready to run. Iterate it once for its events (`Queued`, `Reasoning`, `Delta`,
    `ToolCall`, `ToolResult`, `Notice`, one `Finished`), or call `.text()` for the whole reply.
    `tool_calls` lists the calls made: {"id", "name", "arguments", "result": {"content", "is_error", "ms"}
    or None}."""

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
        self.cancel = cancel or Cancel()
        self.finished: Finished | None = None
        self.warnings: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
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
                elif isinstance(event, ToolCall):
                    self.tool_calls.append(
                        {"id": event.id, "name": event.name, "arguments": event.arguments, "result": None}
                    )
                elif isinstance(event, ToolResult):
                    self._tool_result(event)
                yield event
        finally:
            self.close()

    def _tool_result(self, event: ToolResult) -> None:
        for call in self.tool_calls:
            if call["id"] == event.id:
                call["result"] = {"content": event.content, "is_error": event.is_error, "ms": event.ms}

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


@dataclass
class TurnRequest:
    """What a turn was asked to do (see `Runtime.turn` for each field)."""

    messages: list[Message] = field(default_factory=list)
    mode: Mode = "send"
    user_text: str | None = None
    preset: str | Character | None = None
    params: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    cancel: threading.Event | None = None
    index: int | None = None
    speaker: str | None = None
    characters: list[str] | None = None
    group: dict[str, Any] | None = None
    tools: Any = None
    tool_choice: Any = None
    tool_approval: Any = None
    approve: Approve | None = None
    offer: ToolOffer | None = None  # the tools offered, checked (made from the four above)


def start_turn(rt: Runtime, session: Session | str | None, request: TurnRequest) -> Turn:
    """Check a turn and return it, ready to run. See `Runtime.turn`."""
    if request.mode not in MODES:
        raise InvalidInput(f"Unknown mode {request.mode!r}; use one of {', '.join(MODES)}.", field="mode")
    if request.characters and session not in (None, "new"):
        raise InvalidInput(
            "`characters` starts a group chat; an open chat keeps its own.", field="characters"
        )
    if request.mode != "impersonate" and request.tools is not None:
        from .tools.loop import prepare_tools

        r = request
        request.offer = prepare_tools(rt, r.tools, r.tool_choice, r.tool_approval, r.approve)
    if session is None:
        return _stateless(rt, request)
    if session == "new":
        session = _new_session(rt, request)
    elif isinstance(session, str):
        session = rt.sessions.get(session)
    if request.mode == "send" and request.user_text is None and request.messages:
        request.user_text = _last_user_text(request.messages)  # the turn to send is the last message
    return _in_session(rt, session, request)


def _stateless(rt: Runtime, r: TurnRequest) -> Turn:
    """`messages` is the whole conversation; nothing is saved. A group: as a new group chat would."""
    if r.mode in ("regenerate", "continue") and not (r.messages and r.messages[-1]["role"] == "assistant"):
        raise InvalidInput(f"There is no assistant reply to {r.mode}.", field="messages")
    msgs = validate_messages(r.messages) if r.messages or r.mode != "impersonate" else []
    if r.characters:
        return _stateless_group(rt, msgs, r)
    msgs = [_without_speaker(m) for m in msgs]  # speakers' names: groups only
    plan, prompt, sampling = stateless_plan(
        rt,
        msgs,
        preset=r.preset,
        options=r.options,
        params=r.params,
        mode="normal" if r.mode == "send" else r.mode,
    )
    rt.engine.require_backend()
    return Turn(
        lambda c: with_prefill(plan, reply_stream(rt, r.offer, prompt, sampling, c)),
        params=sampling,
        plan=plan,
        prompt=prompt,
        cancel=r.cancel,
    )


def group_plan(rt: Runtime, msgs: list[Message], r: TurnRequest) -> tuple[PromptPlan, SamplingParams]:
    """The plan of a group chat's turn without a session (the prompt a saved group chat would send):
    `r.characters` are the members, `r.speaker` who answers (else the group's order picks), `r.group` the
    settings. Impersonation drafts the user's next message in that group."""
    sampling = rt.params_for(None, r.params)
    draft = _group_draft(rt, msgs, r)
    who = choose_speaker(draft, draft.messages, sampling.seed, r.speaker)
    if r.mode == "impersonate":
        mode = "impersonate"
    else:
        mode = "continue" if msgs and msgs[-1]["role"] == "assistant" else "normal"
    return session_plan(rt, draft, draft.messages, mode=mode, seed=sampling.seed, speaker=who), sampling


def _stateless_group(rt: Runtime, msgs: list[Message], r: TurnRequest) -> Turn:
    """A group chat's turn without a session: the prompt a saved group chat would send (not saved)."""
    plan, sampling = group_plan(rt, msgs, r)
    rt.engine.require_backend()
    return Turn(
        lambda c: with_prefill(plan, reply_stream(rt, r.offer, plan.messages, sampling, c)),
        params=sampling,
        plan=plan,
        prompt=plan.messages,
        cancel=r.cancel,
    )


def _without_speaker(m: Message) -> Message:
    return m if m["role"] == "tool" else {k: v for k, v in m.items() if k != "name"}


def _group_draft(rt: Runtime, msgs: list[Message], r: TurnRequest) -> Session:
    """The group chat these messages make, in memory only."""
    members = [rt.presets.get(name) for name in dict.fromkeys(r.characters or [])]
    system = [str(m["content"]) for m in msgs if m["role"] == "system"]
    return Session(
        id="s-00000000-000000-000000",
        created_at=now_iso(),
        updated_at=now_iso(),
        characters=[c.model_dump() for c in members],
        group=check_group(r.group),
        system_prompt="\n\n".join(system) if system else None,
        messages=[_as_chat_message(m) for m in msgs if m["role"] != "system"],
        **_chat_options(rt, r.options),
    )


def _chat_options(rt: Runtime, options: dict[str, Any] | None) -> dict[str, Any]:
    opts = ChatOptions(**(options or {}))
    check_options(rt, opts)
    return {"persona": opts.persona, "lorebooks": list(opts.lorebooks), "reply_prefix": opts.reply_prefix}


def _as_chat_message(m: Message) -> ChatMessage:
    role: Literal["user", "assistant", "tool"] = m["role"] if m["role"] in ("user", "tool") else "assistant"
    return ChatMessage(
        role=role,
        content=str(m["content"]),
        time=now_iso(),
        name=m.get("name") or None,
        tool_calls=m.get("tool_calls"),
        tool_call_id=m.get("tool_call_id"),
    )


def _last_user_text(messages: list[Message]) -> str:
    if not messages or messages[-1]["role"] != "user":
        raise InvalidInput("The last message must be the user's turn.", field="messages")
    text = str(messages[-1]["content"])
    if not text.strip():
        raise InvalidInput("The message is empty.", field="messages")
    return text


def _new_session(rt: Runtime, r: TurnRequest) -> Session:
    """A session made from a whole conversation; its last message is the user's turn to send."""
    messages = validate_messages(r.messages)
    _last_user_text(messages)
    if isinstance(r.preset, Character):
        raise InvalidInput("A new session needs a saved preset's name.", field="preset")
    if r.characters:  # the group and who answers, checked before the chat exists
        check_speaker(_group_draft(rt, messages, r), r.speaker)
    else:
        rt.params_for(rt.character(r.preset), r.params)  # unknown preset or bad params: nothing is saved
    rt.engine.require_backend()
    system = [str(m["content"]) for m in messages if m["role"] == "system"]
    session = new_session(
        rt,
        character=r.preset,
        system_prompt="\n\n".join(system) if system else None,
        params=r.params,
        greeting=False,
        options=ChatOptions(**(r.options or {})),
        characters=r.characters,
        group=r.group,
    )
    session.messages.extend(_as_chat_message(m) for m in messages[:-1] if m["role"] != "system")
    return session


def _in_session(rt: Runtime, session: Session, r: TurnRequest) -> Turn:
    if r.params is not None:
        rt.params_for(session_character(session), r.params)
    if r.options:  # refuse bad options now, on a copy (update_options only replaces fields)
        update_options(rt, session.model_copy(), r.options)
    speak_only = r.mode == "send" and r.user_text is None and is_group(session)  # "Speak now"
    if r.mode in ("send", "edit") and not speak_only and not (r.user_text and r.user_text.strip()):
        raise InvalidInput("The message is empty.", field="messages")
    if r.mode == "edit":
        message_index(session, r.index, role="user")
    elif r.mode == "regenerate":
        message_index(session, r.index, role="assistant")
    elif r.mode == "continue" and not (session.messages and session.messages[-1].role == "assistant"):
        raise InvalidInput("This chat has no reply to continue.")
    if r.mode in ("send", "edit") or r.speaker is not None:
        check_speaker(session, r.speaker)
    rt.engine.require_backend()
    if r.mode == "impersonate":  # a draft of the user's next message: nothing is saved (no session on it)
        plan, sampling = session_draft(
            rt, session, options=r.options, params=r.params, mode="impersonate", speaker=r.speaker
        )
        return Turn(
            lambda c: with_prefill(plan, rt.engine.stream(plan.messages, sampling, c, label=session.id)),
            params=sampling,
            plan=plan,
            prompt=plan.messages,
            cancel=r.cancel,
        )
    overrides = r.params if r.params is not None else session.params
    sampling = rt.params_for(session_character(session), overrides)
    mode = cast(SessionMode, r.mode)

    def make(c: threading.Event) -> Iterator[StreamEvent]:
        return run_turn(
            rt,
            session,
            mode=mode,
            user_text=r.user_text,
            params=r.params,
            cancel=c,
            options=r.options,
            on_prompt=lambda prompt: setattr(turn, "prompt", prompt),
            index=r.index,
            speaker=r.speaker,
            tools=r.offer,
        )

    turn = Turn(make, params=sampling, session=session, cancel=r.cancel)
    return turn
