"""Turns inside a saved session: send, regenerate, continue. Every turn is saved as it completes,
and the partial reply is saved every few seconds while it streams."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from .backends.base import Cancel, Delta, Finished, Message, Reasoning, ToolResult
from .characters import Character
from .chat import Notice, Queued, StreamEvent
from .chat_prompt import ChatOptions, GroupPrompt, PromptPlan, build_prompt, check_options, resolve_persona
from .errors import BackendError, Conflict, InvalidInput, StorageError
from .group_chat import strip_speaker
from .group_turns import (
    check_group,
    check_speaker,
    choose_speaker,
    is_group,
    members_of,
    settings_of,
    speaker_history,
)
from .params import SamplingParams
from .prompt import greetings
from .runtime import Runtime
from .session_formats import ChatMessage, ModelInfo, Session, now_iso

if TYPE_CHECKING:
    from .tools.loop import ToolOffer

Mode = Literal["send", "edit", "regenerate", "continue"]
PARTIAL_SAVE_S = 2.0


def session_character(session: Session) -> Character | None:
    return session.character_snapshot()


def new_session(
    rt: Runtime,
    *,
    character: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
    greeting: bool = True,
    options: ChatOptions | None = None,
    characters: list[str] | None = None,
    group: dict[str, Any] | None = None,
) -> Session:
    """A fresh session with the character snapshot, its sampling, the chat options and its greeting.
    `characters` (in place of `character`) makes a group chat with `group` settings.
    Everything is checked first, the model too: no empty chat file for a model that is not there."""
    if characters:
        return _new_group(rt, characters, group, system_prompt, params, options)
    char = rt.character(character)
    merged = {**(char.sampling if char else {}), **(params or {})}
    rt.params_for(char, merged)  # validate before anything is saved
    options = options or ChatOptions()
    check_options(rt, options)
    rt.engine.require_backend()
    messages = []
    if greeting and char:
        opening = greetings(char, resolve_persona(rt, options.persona).name)
        if opening and opening[0]:
            messages.append(ChatMessage(role="assistant", content=opening[0], time=now_iso(), greeting=True))
    return rt.sessions.create(
        character=char.model_dump() if char else None,
        character_name=char.name if char else None,
        system_prompt=system_prompt,
        params=merged,
        messages=messages,
        model=_model_info(rt),
        **_option_fields(options),
    )


def _new_group(
    rt: Runtime,
    names: list[str],
    group: dict[str, Any] | None,
    system_prompt: str | None,
    params: dict[str, Any] | None,
    options: ChatOptions | None,
) -> Session:
    members = [rt.presets.get(name) for name in dict.fromkeys(names)]  # NotFound names the preset
    settings = check_group(group)
    unknown = [m for m in settings["muted"] if m not in {c.name for c in members}]
    if unknown:
        raise InvalidInput(f"group.muted: {unknown[0]!r} is not a member of this group.", field="group")
    rt.params_for(None, params)
    options = options or ChatOptions()
    check_options(rt, options)
    rt.engine.require_backend()
    return rt.sessions.create(
        characters=[c.model_dump() for c in members],
        group=settings,
        system_prompt=system_prompt,
        params=dict(params or {}),
        model=_model_info(rt),
        **_option_fields(options),
    )


def _option_fields(options: ChatOptions) -> dict[str, Any]:
    return {
        "persona": options.persona,
        "lorebooks": list(options.lorebooks),
        "reply_prefix": options.reply_prefix,
        "show_reply_prefix": options.show_reply_prefix,
    }


def session_options(session: Session) -> ChatOptions:
    return ChatOptions(
        persona=session.persona,
        lorebooks=list(session.lorebooks),
        reply_prefix=session.reply_prefix,
        show_reply_prefix=session.show_reply_prefix,
    )


def update_options(rt: Runtime, session: Session, changes: dict[str, Any]) -> None:
    """Apply the chat options given in a request (only those given) after checking them."""
    if not changes:
        return
    options = session_options(session)
    for key, value in changes.items():
        setattr(options, key, value)
    check_options(rt, options)
    for key, value in _option_fields(options).items():
        setattr(session, key, value)


def _model_info(rt: Runtime) -> ModelInfo | None:
    backend = rt.engine.backend
    path = getattr(backend, "path", None)
    try:
        return ModelInfo.from_path(path) if path else None
    except OSError:
        return None


def session_plan(
    rt: Runtime,
    session: Session,
    history: list[ChatMessage],
    *,
    mode: str = "normal",
    seed: int | None = None,
    speaker: Character | None = None,
) -> PromptPlan:
    """The prompt for `history` with the session's character, persona, lorebooks and reply prefix.
    In a group chat, `speaker` is who answers (default: who the group's order picks)."""
    if seed is None:
        seed = rt.params_for(session_character(session), session.params).seed
    turns = [m for m in history if m.role in ("user", "assistant", "tool")]
    if not is_group(session):
        return build_prompt(
            rt,
            session_character(session),
            [m.to_openai() for m in turns],
            session_options(session),
            system_prompt=session.system_prompt,
            mode=mode,
            seed=seed,
        )
    members = members_of(session)
    if speaker is None:
        try:
            speaker = choose_speaker(session, history, seed, None)
        except InvalidInput:  # manual order: a preview shows the first member's turn
            speaker = members[0]
    return build_prompt(
        rt,
        speaker,
        speaker_history(members, turns),
        session_options(session),
        system_prompt=session.system_prompt,
        mode=mode,
        seed=seed,
        group=GroupPrompt(members, settings_of(session).prompt),
    )


def prompt_messages(rt: Runtime, session: Session, history: list[ChatMessage]) -> list[Message]:
    return session_plan(rt, session, history).messages


def run_turn(
    rt: Runtime,
    session: Session,
    *,
    mode: Mode = "send",
    user_text: str | None = None,
    params: dict[str, Any] | None = None,
    cancel: threading.Event | None = None,
    options: dict[str, Any] | None = None,
    on_prompt: Callable[[list[Message]], None] | None = None,
    index: int | None = None,
    speaker: str | None = None,
    tools: ToolOffer | None = None,
) -> Iterator[StreamEvent]:
    """Stream one assistant turn into `session`, saving as it goes. The session object is updated in place.
    With `tools`, each round of calls is kept: the reply so far becomes the message that made the calls,
    the results follow as tool messages, and a new reply starts after them.

    Turns on one session run one after the other: a second turn waits (a Queued event) until the first is
    saved, then continues from the session as the first left it, so both replies are kept. `options`
    changes the chat's persona, lorebooks or reply prefix from this turn on.
    """
    cancel = cancel or Cancel()
    lock = rt.sessions.turn_lock(session.id)
    if not lock.acquire(blocking=False):
        yield Queued(1)
        while not lock.acquire(timeout=0.1):
            if cancel.is_set():
                yield Finished("cancelled")
                return
    try:
        rt.sessions.refresh(session)
        yield from _run_turn(
            rt,
            session,
            mode=mode,
            user_text=user_text,
            params=params,
            cancel=cancel,
            options=options,
            on_prompt=on_prompt,
            index=index,
            speaker=speaker,
            tools=tools,
        )
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
    options: dict[str, Any] | None,
    on_prompt: Callable[[list[Message]], None] | None,
    index: int | None,
    speaker: str | None = None,
    tools: ToolOffer | None = None,
) -> Iterator[StreamEvent]:
    if params is not None:
        rt.params_for(session_character(session), params)
        session.params = dict(params)
    update_options(rt, session, options or {})
    sampling = rt.params_for(session_character(session), session.params)
    now = now_iso()
    reply, history, prefix = _place_reply(session, mode, user_text, index, now)
    branched = mode in ("regenerate", "edit")  # the visible path may be shorter; nothing is lost
    who = _speaker_of(session, history, reply, sampling.seed, speaker, mode)
    plan = session_plan(rt, session, history, mode=_TRIGGERS[mode], seed=sampling.seed, speaker=who)
    messages = plan.messages
    if on_prompt is not None:
        on_prompt(messages)
    for warning in plan.activation.warnings:
        yield Notice("warning", warning)
    if plan.prefill and plan.show_prefill:
        prefix = plan.prefill  # the reply starts with it, as the model sees it
    reply.content = prefix
    reply.interrupted = None
    reply.stopped = True  # until the turn completes, what is on disk is partial
    yield from _save(rt, session, allow_shrink=branched)
    reply.stopped = False
    if plan.prefill and plan.show_prefill:
        yield Delta(plan.prefill)
    if mode != "continue":
        reply.reasoning = ""
    w = _ReplyWriter(rt, session, reply, prefix, mode, branched)
    try:
        replies = reply_stream(rt, tools, messages, sampling, cancel, w.next_round, label=session.id)
        for event in hidden_prefix(plan, replies):
            if isinstance(event, Reasoning):
                w.reply.reasoning += event.text
            if isinstance(event, Delta | Reasoning):
                if isinstance(event, Delta):
                    w.text += event.text
                    w.reply.content = w.text
                yield from w.maybe_save()
            elif isinstance(event, ToolResult):
                w.results[event.id] = event  # its time and error flag, kept with the tool message
            elif isinstance(event, Finished):
                w.completed = True
                w.reply.metrics = {**event.metrics.to_dict(), "finish_reason": event.finish_reason}
                stopped = event.finish_reason == "cancelled" or cancel.is_set()
                _finish(session, w.reply, w.text, stopped=stopped, mode=w.mode)
                yield from _save(rt, session, allow_shrink=True)
            yield event
            yield from w.notices()
    except BackendError as exc:  # the model process crashed: the reply so far is kept, flagged
        w.reply.interrupted = exc.message
        raise
    finally:
        if not w.completed:  # an error or a client that went away: keep what was generated
            _finish(session, w.reply, w.text, stopped=True, mode=w.mode)
            with contextlib.suppress(StorageError):  # nobody is listening to be told
                rt.sessions.save(session, allow_shrink=True)


def reply_stream(
    rt: Runtime,
    tools: ToolOffer | None,
    messages: list[Message],
    params: SamplingParams,
    cancel: threading.Event,
    on_round: Callable[[Message, list[Message]], None] | None = None,
    *,
    label: str | None = None,
) -> Iterator[StreamEvent]:
    """The model's reply to `messages`: with tools offered, the tool loop's rounds (engine/tools/loop.py).
    `label` is the chat's session id (None for a stateless turn), shown by the KV slot that serves it."""
    if tools is None:
        return rt.engine.stream(messages, params, cancel, label=label)
    from .tools.loop import run_tools

    return run_tools(rt, tools, messages, params, cancel, on_round, label=label)


class _ReplyWriter:
    """The reply being written into a session, and its partial saves. A round of tool calls turns the reply
    so far into the message that made them; the results follow it, then a new reply."""

    def __init__(
        self, rt: Runtime, session: Session, reply: ChatMessage, text: str, mode: Mode, branched: bool
    ) -> None:
        self.rt, self.session, self.reply, self.text = rt, session, reply, text
        self.mode, self.branched = mode, branched
        self.completed = False
        self.last_save = time.monotonic()
        self._notices: list[Notice] = []
        self.results: dict[str, ToolResult] = {}  # this round's, by call id

    def maybe_save(self) -> Iterator[Notice]:
        if time.monotonic() - self.last_save > PARTIAL_SAVE_S:
            self.reply.stopped = True  # until the turn completes, what is on disk is partial
            yield from _save(self.rt, self.session, allow_shrink=self.branched)
            self.reply.stopped = False
            self.last_save = time.monotonic()

    def next_round(self, assistant: Message, results: list[Message]) -> None:
        now = now_iso()
        self.reply.content = str(assistant.get("content") or "")
        self.reply.tool_calls = list(assistant.get("tool_calls") or [])
        self.reply.sync()
        for r in results:
            done = self.results.pop(r["tool_call_id"], None)
            self.session.messages.append(
                ChatMessage(
                    role="tool",
                    content=r["content"],
                    time=now,
                    tool_call_id=r["tool_call_id"],
                    name=r["name"],
                    metrics={"ms": done.ms, "is_error": done.is_error} if done is not None else None,
                )
            )
        self.reply = ChatMessage(role="assistant", content="", time=now, name=self.reply.name)
        self.session.messages.append(self.reply)
        self.text, self.mode = "", "send"  # an empty last reply is dropped, as after a send
        self.reply.stopped = True
        self._notices += _save(self.rt, self.session, allow_shrink=True)
        self.reply.stopped = False
        self.last_save = time.monotonic()

    def notices(self) -> Iterator[Notice]:
        yield from self._notices
        self._notices.clear()


_TRIGGERS = {"send": "normal", "edit": "normal", "regenerate": "regenerate", "continue": "continue"}


def _place_reply(
    session: Session, mode: Mode, user_text: str | None, index: int | None, now: str
) -> tuple[ChatMessage, list[ChatMessage], str]:
    """Where the reply goes: (the reply message, the history before it, the text it starts with).

    send: the user's message and a new reply end the chat (in a group chat with no `user_text`, only
    the reply: a member speaks now). edit: message `index` (the user's) gets a new
    version with `user_text` and a new reply follows it. regenerate: reply `index` (default the last) gets
    a new, empty version. Either way what followed the old version stays with it, as a branch.
    """
    if mode == "send":
        speak_only = user_text is None and is_group(session)  # a member answers now, after the last message
        if not speak_only and (not user_text or not user_text.strip()):
            raise InvalidInput("The message is empty.", field="messages")
        _drop_interrupted_reply(session)
        if user_text is not None:
            session.messages.append(ChatMessage(role="user", content=user_text, time=now))
        reply = ChatMessage(role="assistant", content="", time=now)
        session.messages.append(reply)
        return reply, session.messages[:-1], ""
    if mode == "edit":
        k = message_index(session, index, role="user")
        if not user_text or not user_text.strip():
            raise InvalidInput("The message is empty.", field="content")
        branch_at(session, k, user_text, now)
        reply = ChatMessage(role="assistant", content="", time=now)
        session.messages.append(reply)
        return reply, session.messages[:-1], ""
    default = None if mode == "regenerate" else len(session.messages) - 1
    k = message_index(session, index if index is not None else default, role="assistant")
    reply = session.messages[k]
    if mode == "regenerate":
        reply.new_version(now, after=session.messages[k + 1 :])
        del session.messages[k + 1 :]
        return reply, session.messages[:k], ""
    if k != len(session.messages) - 1:
        raise InvalidInput("Only the last reply can be continued.", field="index")
    history = [*session.messages[:k], ChatMessage(role="assistant", content=reply.content, time=reply.time)]
    return reply, history, reply.content


def message_index(session: Session, index: int | None, *, role: str | None = None) -> int:
    """A message's index, checked (None: the last message with `role`). Raises InvalidInput."""
    n = len(session.messages)
    if index is None:
        found = [i for i, m in enumerate(session.messages) if role is None or m.role == role]
        if not found:
            what = {"assistant": "reply to regenerate", "user": "message of yours"}.get(role or "", "message")
            raise InvalidInput(f"This chat has no {what} yet.", field="index")
        return found[-1]
    if not 0 <= index < n:
        raise InvalidInput(
            f"There is no message {index}: this chat shows {n} (counted from 0).", field="index"
        )
    if role is not None and session.messages[index].role != role:
        raise InvalidInput(
            f"Message {index} is the {session.messages[index].role}'s, not the {role}'s.", field="index"
        )
    return index


def branch_at(session: Session, index: int, content: str, time: str = "") -> ChatMessage:
    """A new version of message `index` with `content`; what followed stays with the old version."""
    message = session.messages[index]
    message.branch(content, time, after=session.messages[index + 1 :])
    del session.messages[index + 1 :]
    return message


def select_version(session: Session, index: int, version: int) -> None:
    """Show version `version` of message `index`, and the branch that follows it."""
    message = session.messages[message_index(session, index)]
    rest = message.select(version, after=session.messages[index + 1 :])
    session.messages[index + 1 :] = rest


def _speaker_of(
    session: Session,
    history: list[ChatMessage],
    reply: ChatMessage,
    seed: int,
    forced: str | None,
    mode: Mode,
) -> Character | None:
    """In a group chat, who writes `reply` (recorded on it): a regenerated or continued reply keeps its
    speaker unless another is forced."""
    if not is_group(session):
        return None
    if forced is None and mode in ("regenerate", "continue") and reply.name:
        forced = reply.name
    try:
        who = choose_speaker(session, history, seed, forced)
    except InvalidInput:
        if forced is None or forced != reply.name:
            raise
        who = choose_speaker(session, history, seed, None)  # its speaker has left the group
    reply.name = who.display_name
    return who


def _drop_interrupted_reply(session: Session) -> None:
    """An empty reply that never finished (the server died before its first token) is dropped before the
    next turn, as `_finish` drops an empty reply, so it does not teach the model to answer with nothing."""
    last = session.messages[-1] if session.messages else None
    interrupted = last is not None and last.role == "assistant" and not (last.content or last.metrics)
    if interrupted and last is not None and not (last.alternatives or last.greeting):
        session.messages.pop()


def _finish(session: Session, reply: ChatMessage, text: str, *, stopped: bool, mode: Mode) -> None:
    if reply.name and is_group(session):  # the model may start with "Name:", as the history reads
        names = [c.display_name for c in members_of(session) if c.display_name == reply.name]
        text = strip_speaker(text, [*names, reply.name])
    reply.content = text
    reply.stopped = stopped
    reply.sync()
    if (
        mode in ("send", "edit")
        and not text
        and not reply.reasoning
        and session.messages
        and session.messages[-1] is reply
    ):
        session.messages.pop()  # nothing was generated: keep the user turn only


def _save(rt: Runtime, session: Session, *, allow_shrink: bool = False) -> Iterator[Notice]:
    try:
        rt.sessions.save(session, allow_shrink=allow_shrink)
    except StorageError as exc:
        yield Notice("warning", f"Could not save the chat: {exc.message} The chat stays open in memory.")


def stateless_plan(
    rt: Runtime,
    messages: list[Message],
    *,
    preset: str | Character | None = None,
    options: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    mode: str = "normal",
    always: bool = False,
) -> tuple[PromptPlan | None, list[Message], SamplingParams]:
    """A call without a session: `messages` is the whole conversation.

    With no preset and no chat options the messages go to the model as they are (plan None). Otherwise
    the first system message, if any, is the system prompt and the rest is the history; a trailing
    assistant message is a reply to continue. `always`: build the prompt even then (a new session's).
    """
    char = preset if isinstance(preset, Character) else rt.character(preset)
    sampling = rt.params_for(char, params)
    if char is None and not options and mode != "impersonate" and not always:
        return None, messages, sampling
    opts = ChatOptions(**(options or {}))
    check_options(rt, opts)
    system_parts = [str(m["content"]) for m in messages if m["role"] == "system"]
    system = "\n\n".join(system_parts) if system_parts else None  # as a new session keeps them
    history = [m for m in messages if m["role"] != "system"]
    if mode == "normal" and history and history[-1]["role"] == "assistant":
        mode = "continue"
    plan = build_prompt(rt, char, history, opts, system_prompt=system, mode=mode, seed=sampling.seed)
    return plan, plan.messages, sampling


def session_draft(
    rt: Runtime,
    session: Session,
    *,
    user_text: str | None = None,
    options: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    mode: str = "normal",
    speaker: str | None = None,
) -> tuple[PromptPlan, SamplingParams]:
    """The plan of a session's next turn (with `user_text` sent), or of an impersonation; saves nothing.
    In a group chat `speaker` names who answers (else the group's order picks)."""
    draft = session.model_copy(deep=True)
    update_options(rt, draft, options or {})
    sampling = rt.params_for(session_character(draft), params if params is not None else draft.params)
    history = list(draft.messages)
    if user_text:
        history.append(ChatMessage(role="user", content=user_text))
    who = None
    if speaker is not None:
        check_speaker(draft, speaker)
        who = choose_speaker(draft, history, sampling.seed, speaker)
    return session_plan(rt, draft, history, mode=mode, seed=sampling.seed, speaker=who), sampling


def with_prefill(plan: PromptPlan | None, events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """A stateless turn's events: lore warnings, then the reply prefix as the first text, then the rest."""
    if plan is not None:
        for warning in plan.activation.warnings:
            yield Notice("warning", warning)
        if plan.prefill and plan.show_prefill:
            yield Delta(plan.prefill)
    yield from hidden_prefix(plan, events)


def hidden_prefix(plan: PromptPlan | None, events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """The model continues the reply prefix, spaces included ("Ahoy," then " matey"). When the prefix is
    not shown, the reply starts at the continuation's first word."""
    if plan is None or not plan.prefill or plan.show_prefill:
        yield from events
        return
    started = False
    for event in events:
        if isinstance(event, Delta) and not started:
            text = event.text.lstrip()
            if not text:
                continue
            started, event = True, Delta(text)
        yield event


def _with_session(rt: Runtime, session_id: str, change: Callable[[Session], object]) -> Session:
    """Apply `change` to a stored session and save it, unless a reply is being written into it."""
    lock = rt.sessions.turn_lock(session_id)
    if not lock.acquire(timeout=5):
        raise Conflict("A reply is being written in this chat; try again when it is done.")
    try:
        session = rt.sessions.get(session_id)
        change(session)
        rt.sessions.save(session, allow_shrink=True)  # a branch is kept, never lost
        return session
    finally:
        lock.release()


def edit_message(rt: Runtime, session_id: str, index: int, content: str) -> Session:
    """A new version of message `index` with `content`, with no reply generated (for the user's message,
    `Runtime.turn(mode="edit")` also writes the new reply). What followed stays with the old version."""
    if not content.strip():
        raise InvalidInput("The message is empty.", field="content")
    return _with_session(rt, session_id, lambda s: branch_at(s, message_index(s, index), content, now_iso()))


def show_version(rt: Runtime, session_id: str, index: int, version: int) -> Session:
    """Show version `version` of message `index`, and the branch that follows it."""
    return _with_session(rt, session_id, lambda s: select_version(s, index, version))
