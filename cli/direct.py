"""DirectClient: the engine in this process (Runtime.turn). No server, no HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from engine import (
    Delta,
    Finished,
    InvalidInput,
    Mode,
    Notice,
    Queued,
    Reasoning,
    Runtime,
    Session,
    StreamEvent,
    ToolCall,
    ToolResult,
    Turn,
)

from .clients import (
    Approver,
    ChatState,
    Done,
    Event,
    Note,
    Text,
    Thought,
    ToolDone,
    ToolUse,
    Waiting,
    greeting_of,
)


class DirectClient:
    kind = "direct"
    where = "in this process"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.state = ChatState(preset=rt.settings.chat.preset)
        self.session: Session | None = None
        self.approver: Approver | None = None  # the terminal's y/N prompt; None: calls needing it are refused
        self.force_tool: str | None = None  # /tools use NAME: the next reply calls it

    # --- turns --------------------------------------------------------------------------------------

    def send(self, text: str, cancel: threading.Event) -> Iterator[Event]:
        if not text.strip():
            raise InvalidInput("The message is empty.")
        if self.session is None:
            st = self.state
            self.session = self.rt.new_session(
                character=st.preset,
                system_prompt=st.system_prompt,
                params=st.params,
                options=st.options,
            )
            self.state.adopt(self.session)
        return self._turn("send", text, cancel)

    def regenerate(self, cancel: threading.Event, index: int | None = None) -> Iterator[Event]:
        if self.session is None:
            raise InvalidInput("There is no reply to regenerate yet.")
        return self._turn("regenerate", None, cancel, index)

    def edit(self, index: int, text: str, cancel: threading.Event) -> Iterator[Event] | None:
        if self.session is None:
            raise InvalidInput("There is nothing to edit yet.")
        shown = self.session.messages
        if 0 <= index < len(shown) and shown[index].role == "user":
            return self._turn("edit", text, cancel, index)
        self.session = self.rt.edit(self.session.id, index, text)
        return None

    def select(self, index: int, version: int) -> Session:
        if self.session is None:
            raise InvalidInput("There is nothing to choose from yet.")
        self.session = self.rt.select_version(self.session.id, index, version)
        return self.session

    def current(self) -> Session | None:
        return self.session

    def _turn(
        self, mode: Mode, text: str | None, cancel: threading.Event, index: int | None = None
    ) -> Iterator[Event]:
        assert self.session is not None
        turn = self.rt.turn(
            session=self.session,
            mode=mode,
            user_text=text,
            params=self.state.params,
            options=self.state.options,
            cancel=cancel,
            index=index,
            **self._tools(),
        )
        return self._events(turn)

    def _tools(self) -> dict[str, Any]:
        """Every enabled MCP tool is offered; each call is asked about as tools.approval says."""
        hub = self.rt.tools  # started on first use; servers get a moment to come up
        hub.wait_ready(10)
        if not hub.list_tools(enabled_only=True):
            return {}
        approver = self.approver

        def approve(call: ToolCall) -> Any:
            answer = approver(call.name, call.arguments) if approver is not None else "deny"
            return answer if answer in ("allow", "always") else "deny"

        choice, self.force_tool = self.force_tool, None
        return {
            "tools": "auto",
            "approve": approve if approver is not None else None,
            "tool_choice": {"type": "function", "function": {"name": choice}} if choice else None,
        }

    def tools(self) -> list[dict[str, Any]]:
        hub = self.rt.tools
        hub.wait_ready(10)  # servers that are still starting get a moment
        return [t.to_dict() for t in hub.list_tools()]

    def _events(self, turn: Turn) -> Iterator[Event]:
        try:
            for event in turn:
                if isinstance(event, Finished):
                    self.state.last_metrics = event.metrics.to_dict()
                yield _convert(event, turn.session_id or "")
        finally:
            turn.close()  # a turn's own cleanup saves what was generated

    def impersonate(self, cancel: threading.Event) -> Iterator[Event]:
        st = self.state
        if self.session is not None:
            turn = self.rt.turn(session=self.session, mode="impersonate", options=st.options, cancel=cancel)
        else:
            head = [{"role": "system", "content": st.system_prompt}] if st.system_prompt is not None else []
            turn = self.rt.turn(
                head,
                mode="impersonate",
                preset=st.preset,
                options=st.options,
                params=st.params,
                cancel=cancel,
            )
        return (_convert(e, "") for e in turn)

    def personas(self) -> list[dict[str, Any]]:
        store = self.rt.personas
        default = store.default_name()
        return [{**p.model_dump(), "default": p.name == default} for p in store.list()]

    def lorebooks(self) -> list[str]:
        return self.rt.lorebooks.names()

    # --- chats --------------------------------------------------------------------------------------

    def new_chat(self, preset: str | None, system_prompt: str | None, params: dict[str, Any]) -> str | None:
        character = self.rt.presets.get(preset) if preset else None  # NotFound names the preset
        self.session = None
        options = self.state.options
        self.state = ChatState(
            preset=preset, system_prompt=system_prompt, params=dict(params), options=options
        )
        return greeting_of(character.model_dump() if character else None, self.rt.settings.chat.user_name)

    def open(self, session_id: str) -> Session:
        session = self.rt.sessions.get(session_id)
        self.session = session
        self.state = ChatState()
        self.state.adopt(session)
        return session

    def sessions(self) -> list[dict[str, Any]]:
        return [s.model_dump() for s in self.rt.sessions.list()]

    def rename(self, title: str) -> str:
        if self.session is None:
            raise InvalidInput("Nothing to save yet: send a message first, then /save NAME.")
        self.session = self.rt.sessions.rename(self.session.id, title)
        return self.session.id

    def presets(self) -> list[dict[str, Any]]:
        return [c.model_dump(exclude={"card"}) for c in self.rt.presets.list()]

    def effective_params(self) -> tuple[dict[str, Any], bool]:
        if self.session is not None:
            character = self.session.character_snapshot()
        else:
            character = self.rt.character(self.state.preset)
        return self.rt.params_for(character, self.state.params).model_dump(), True

    def health(self) -> dict[str, Any]:
        return self.rt.health()

    def close(self) -> None:
        self.rt.close()


def _convert(event: StreamEvent, session_id: str) -> Event:
    if isinstance(event, Delta):
        return Text(event.text)
    if isinstance(event, Reasoning):
        return Thought(event.text)
    if isinstance(event, Finished):
        return Done(event.finish_reason, event.metrics.to_dict(), session_id)
    if isinstance(event, Queued):
        return Waiting(event.position)
    if isinstance(event, Notice):
        return Note(event.message)
    if isinstance(event, ToolCall):
        return ToolUse(event.name, event.arguments)
    if isinstance(event, ToolResult):
        return ToolDone(event.content, event.is_error)
    raise TypeError(f"unexpected engine event {event!r}")
