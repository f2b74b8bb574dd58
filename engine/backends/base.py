"""The one streaming contract every backend meets.

A backend turns OpenAI-style messages plus sampling params into a stream of events:
any number of `Delta`s, then exactly one `Finished`. It checks `cancel` between tokens,
so a Stop or a client disconnect ends generation within one token.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..params import SamplingParams

# {"role": "system"|"user"|"assistant"|"tool", "content": str}; an assistant message may carry OpenAI's
# "tool_calls" list, a tool message its "tool_call_id" and "name"
Message = dict[str, Any]


class Cancel(threading.Event):
    """A turn's cancel flag (Stop, a closed tab, a client gone) that can also wake a waiter on something
    else: what `on_set` registers runs in the thread that sets it. A stream that waits on its items then
    needs no timer to notice a cancel; with a plain threading.Event it must poll."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Callable[[], None]] = []
        self._hooks_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._hooks_lock:
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    @contextlib.contextmanager
    def on_set(self, hook: Callable[[], None]) -> Iterator[None]:
        """Run `hook` when the flag is set while the block runs (at once if it is set already)."""
        with self._hooks_lock:
            self._hooks.append(hook)
        try:
            if self.is_set():
                hook()
            yield
        finally:
            with self._hooks_lock:
                self._hooks.remove(hook)


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's thought (see engine/reasoning.py); Delta carries only the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model calls a tool: `arguments` is the parsed JSON object. A remote backend that returns OpenAI
    `tool_calls` yields these; the embedded one writes calls as text, which engine/tools/loop.py parses."""

    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        args = json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": args}}


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What the tool call `id` gave back (or why it did not run: `is_error`), after `ms` milliseconds."""

    id: str
    content: str
    is_error: bool = False
    ms: float = 0.0


@dataclass(slots=True)
class Metrics:
    """Per-turn figures. None means "unknown" (a remote backend may not report it), never zero."""

    prompt_tokens: int | None = None
    prompt_eval_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    context_used: int | None = None
    context_size: int | None = None
    total_ms: float | None = None
    queue_ms: float | None = None
    dropped_messages: int = 0
    reasoning_tokens: int | None = None
    reasoning_ms: float | None = None
    answer_ttft_ms: float | None = None
    reasoning_unclosed: bool | None = None  # the reply ended inside its thought

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class Finished:
    finish_reason: str  # "stop" | "length" | "cancelled" | "tool_calls" (calls the caller runs)
    metrics: Metrics = field(default_factory=Metrics)


Event = Delta | Reasoning | ToolCall | Finished


class Backend(Protocol):
    name: str  # "llama_cpp" | "openai"
    serialised: bool  # True: the engine must hold its lock while streaming

    def model_info(self) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Tokens of the rendered prompt, or None when the backend cannot tell. Backends that take
        tools also accept `tools=` (the tools offered, which the prompt shows)."""
        ...

    def context_size(self) -> int | None: ...

    def stream(
        self,
        messages: list[Message],
        params: SamplingParams,
        cancel: threading.Event,
        *,
        label: str | None = None,
    ) -> Iterator[Event]:
        """Backends that take tools also accept `tools=` (OpenAI's function specs), `tool_choice=` and
        `parallel_tool_calls=` (see LlamaCppBackend.stream). Every backend accepts `label=`, the chat the
        reply belongs to (its session id; None for a stateless request), which a KV slot shows."""
        ...

    def close(self) -> None: ...
