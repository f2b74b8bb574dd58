"""The engine's public API, all of it in this file. The web UI, the REST and OpenAI APIs and the terminal
import only these names (`from engine import ...`; tests/test_public_api.py holds them to it); every
engine module is private.

    rt = Runtime(load_settings()[0])
    turn = rt.turn([{"role": "user", "content": "Hi"}])   # checked now: bad input raises at once
    for event in turn:            # Queued | Reasoning | Delta | ToolCall | ToolResult | Notice | Finished
        ...
    turn.text(), turn.finished                            # or the whole reply at once

Everything else is reached through the Runtime (engine/runtime.py) and the public types, never by import:
- chats: rt.turn, rt.edit, rt.select_version, rt.new_session, rt.chat_options, rt.update_options;
  rt.draft and rt.preview build a turn's prompt without sending it
- stores and services: rt.sessions, rt.presets (characters), and, made on first use, rt.personas,
  rt.lorebooks (and rt.lore_activation), rt.sampling_presets, rt.models (files, estimates, loading;
  .downloads), rt.tools (the MCP servers)
- the model and the machine: rt.settings, rt.model_info, rt.health, rt.params_for, rt.reasoning_tags,
  rt.engine (.backend, .load_error), rt.gpu_status, rt.gpu_refusal, rt.gpu_history, rt.process_memory,
  rt.process_history, rt.secret
- the types' own methods: Character.greetings, .to_form, .from_form, .form_fields; Session.character_snapshot,
  .is_id, .from_doc; SamplingParams.parse, .sources, .session_overrides

Names load on first use (PEP 562), so the model worker process, which imports `engine.backends`, does not
pay for the rest of the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import Cancel, Delta, Finished, Message, Metrics, Reasoning, ToolCall, ToolResult
    from .characters import Character
    from .chat import Notice, Queued, StreamEvent
    from .config import Settings, load_settings
    from .errors import (
        BackendError,
        ConfigError,
        EngineError,
        InvalidInput,
        ModelUnavailable,
        NotFound,
        StorageError,
        TooLarge,
    )
    from .group_chat import GroupSettings
    from .params import SamplingParams
    from .runtime import Runtime
    from .session_formats import ChatMessage, Session
    from .turn import Mode, Turn

_WHERE = {
    # running turns
    "Runtime": "runtime",
    "Turn": "turn",
    "Mode": "turn",
    "Cancel": "backends.base",  # a turn's cancel flag: set() stops it within a token
    "Message": "backends.base",
    # a turn's events
    "StreamEvent": "chat",
    "Queued": "chat",
    "Reasoning": "backends.base",
    "Delta": "backends.base",
    "Notice": "chat",
    "ToolCall": "backends.base",
    "ToolResult": "backends.base",
    "Finished": "backends.base",
    "Metrics": "backends.base",
    # what a turn reads and writes
    "Session": "session_formats",
    "ChatMessage": "session_formats",
    "Character": "characters",
    "GroupSettings": "group_chat",  # a group chat's settings (Session.group)
    "SamplingParams": "params",
    "Settings": "config",
    "load_settings": "config",
    # errors: each has a user-facing message, an API `type` and an HTTP status
    "EngineError": "errors",
    "ConfigError": "errors",
    "InvalidInput": "errors",
    "NotFound": "errors",
    "TooLarge": "errors",
    "ModelUnavailable": "errors",
    "BackendError": "errors",
    "StorageError": "errors",
}

__all__ = [
    "BackendError",
    "Cancel",
    "ChatMessage",
    "Character",
    "ConfigError",
    "Delta",
    "EngineError",
    "Finished",
    "GroupSettings",
    "InvalidInput",
    "Message",
    "Metrics",
    "Mode",
    "ModelUnavailable",
    "NotFound",
    "Notice",
    "Queued",
    "Reasoning",
    "Runtime",
    "SamplingParams",
    "Session",
    "Settings",
    "StorageError",
    "StreamEvent",
    "TooLarge",
    "ToolCall",
    "ToolResult",
    "Turn",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
