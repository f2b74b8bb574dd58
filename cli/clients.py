"""The REPL's one view of a chat backend: `ChatClient`, with DirectClient (in-process engine) and
HttpClient (a running server) behind it. Both stream the same small events and raise EngineError."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine import SamplingParams, Session


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of the reply."""

    text: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """The model is busy; `position` requests are ahead of this one."""

    position: int


@dataclass(frozen=True, slots=True)
class Thought:
    """A piece of a thinking model's thought, shown apart from the reply."""

    text: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something to tell the user that did not stop the turn (e.g. a save that failed)."""

    message: str


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str  # "stop" | "length" | "cancelled"
    metrics: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None  # the saved chat this turn belongs to, when the client learns it here


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The model called a tool (shown before it runs, or is refused)."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolDone:
    """What the tool call gave back, or why it did not run."""

    content: str
    is_error: bool = False


Event = Text | Thought | Waiting | Note | ToolUse | ToolDone | Done

# Asks the person at the terminal whether a tool call may run: (name, arguments) -> "allow"|"always"|"deny"
Approver = Callable[[str, dict[str, Any]], str]


@dataclass
class ChatState:
    """What a chat is: its saved id (None until the first message), preset, custom prompt and params."""

    session_id: str | None = None
    preset: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # this chat's overrides of the defaults
    last_metrics: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # persona, lorebooks, reply_prefix set here

    def adopt(self, session: Session) -> None:
        self.session_id = session.id
        self.preset, self.system_prompt = session.character_name, session.system_prompt
        self.params = dict(session.params)
        self.options = {}  # the session keeps its own; /persona, /lore and /prefix change them
        last = next((m for m in reversed(session.messages) if m.role == "assistant" and m.metrics), None)
        self.last_metrics = dict(last.metrics) if last and last.metrics else {}

    def set_params(self, changes: dict[str, Any]) -> None:
        """Validate with the engine's bounds (InvalidInput names the field), then apply."""
        merged = {**self.params, **changes}
        SamplingParams.parse(merged)
        self.params = merged


class ChatClient(Protocol):
    """Everything the REPL needs; DirectClient and HttpClient implement it."""

    state: ChatState
    kind: str  # "direct" | "http"
    where: str  # e.g. "in this process" or the server URL

    def send(self, text: str, cancel: threading.Event) -> Iterator[Event]: ...

    def regenerate(self, cancel: threading.Event, index: int | None = None) -> Iterator[Event]:
        """A new version of reply `index` (default the last); what followed stays on the old branch."""
        ...

    def edit(self, index: int, text: str, cancel: threading.Event) -> Iterator[Event] | None:
        """A new version of message `index`: for the user's, the new reply streams; else None (saved)."""
        ...

    def select(self, index: int, version: int) -> Session:
        """Show version `version` of message `index` and its branch; returns the chat as it is now."""
        ...

    def current(self) -> Session | None:
        """The open chat as saved, or None before its first message."""
        ...

    def impersonate(self, cancel: threading.Event) -> Iterator[Event]:
        """The user's next message, drafted by the model; nothing is saved."""
        ...

    def personas(self) -> list[dict[str, Any]]: ...

    def lorebooks(self) -> list[str]: ...

    def tools(self) -> list[dict[str, Any]]:
        """The MCP tools: [{"server", "name", "description", "input_schema", "enabled"}]."""
        ...

    def new_chat(self, preset: str | None, system_prompt: str | None, params: dict[str, Any]) -> str | None:
        """Start a new chat, saved on its first message. Returns the preset's greeting, if any.

        Raises NotFound for an unknown preset, leaving the current chat as it was."""
        ...

    def open(self, session_id: str) -> Session: ...

    def sessions(self) -> list[dict[str, Any]]:
        """[{"id", "title", "updated_at", "messages"}], newest first."""
        ...

    def rename(self, title: str) -> str:
        """Title the current (saved) chat; returns its id."""
        ...

    def presets(self) -> list[dict[str, Any]]:
        """[{"name", "title", "description", "sampling", ...}], sorted by name."""
        ...

    def effective_params(self) -> tuple[dict[str, Any], bool]:
        """The sampling values the next turn uses, and whether the defaults under them are known exactly."""
        ...

    def health(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def greeting_of(preset: dict[str, Any] | None, user_name: str = "User") -> str | None:
    """The preset's first greeting with {{char}}/{{user}} rendered, or None."""
    if not preset:
        return None
    from engine import Character

    texts = Character.model_validate(preset).greetings(user_name)
    return texts[0] if texts else None
