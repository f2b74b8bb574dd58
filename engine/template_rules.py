"""What a model's chat template accepts, found by rendering small probe conversations, and `conform`, which
reshapes a prompt into what a strict template takes.

Strict templates (Gemma's, Mistral's) take user and assistant turns in strict alternation, starting with
the user: they raise "Conversation roles must alternate", or "System role not supported" for any system
message, or render a mid-chat system message as a role the model never saw. For those, `conform`:
- merges a system message after the first turn (the post-history instructions) into the last user message;
- puts a user turn before an opening assistant message (a character's greeting);
- joins consecutive messages of one role (a turn that produced no reply leaves two user messages);
- merges the leading system prompt into the first user message when the template has no system role.
Leading system prompt and history stay the same from turn to turn, so the cached prefix still holds.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import EngineError, InvalidInput

Message = dict[str, Any]
Render = Callable[[list[Message]], object]


@dataclass(frozen=True)
class TemplateRules:
    system_first: bool = True  # a system message may open the chat
    system_late: bool = True  # a system message may follow the turns (and means something there)
    alternation: bool = False  # the template insists on user/assistant/user/...

    @property
    def lenient(self) -> bool:
        return self.system_first and self.system_late and not self.alternation


LENIENT = TemplateRules()


def _m(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def probe(render: Render) -> TemplateRules:
    """Rules of the template behind `render`, which raises InvalidInput when the template rejects messages.
    Other errors (the model is gone) propagate: nothing is concluded from them."""

    def takes(messages: list[Message]) -> bool:
        try:
            render(messages)
        except InvalidInput:
            return False
        return True

    u, a, s = _m("user", "Hi."), _m("assistant", "Hello."), _m("system", "Be brief.")
    alternation = not takes([u, u]) or not takes([a, u])
    return TemplateRules(
        system_first=takes([s, u]),
        system_late=takes([u, a, u, s]) and not alternation,
        alternation=alternation,
    )


_cache: weakref.WeakKeyDictionary[Any, TemplateRules] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def rules_for(backend: Any) -> TemplateRules:
    """The rules for a backend's template, probed once per backend object through its count_tokens.
    A backend that cannot tell (count_tokens gives None, as a remote server does) is taken as lenient."""
    if backend is None or not callable(getattr(backend, "count_tokens", None)):
        return LENIENT
    with _lock:
        try:
            cached = _cache.get(backend)
        except TypeError:  # not weak-referenceable: probe every time
            cached = None
    if cached is not None:
        return cached
    try:
        rules = probe(backend.count_tokens)
    except EngineError:  # the model is unavailable: the turn itself will say so; conclude nothing
        return LENIENT
    with _lock, contextlib.suppress(TypeError):  # not weak-referenceable: not cached
        _cache[backend] = rules
    return rules


def conform(messages: list[Message], rules: TemplateRules) -> list[Message]:
    """`messages` reshaped for a strict template (see the module's doc); unchanged for a lenient one."""
    if rules.lenient or not messages:
        return messages
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    system = [dict(m) for m in messages[:head]]
    turns: list[Message] = []
    late: list[str] = []
    for m in messages[head:]:
        if m["role"] == "system":
            late.append(m["content"])
        elif turns and turns[-1]["role"] == m["role"]:
            turns[-1] = _m(m["role"], _join(turns[-1]["content"], m["content"]))
        else:
            turns.append(dict(m))
    if turns and turns[0]["role"] != "user":
        turns.insert(0, _m("user", ""))
    if late:
        if not turns:
            turns.append(_m("user", ""))
        last_user = max(i for i, t in enumerate(turns) if t["role"] == "user")  # turns[0] is one
        turns[last_user] = _m("user", _join(turns[last_user]["content"], *late))
    if system and not rules.system_first:
        text = _join(*(m["content"] for m in system))
        if not turns or turns[0]["role"] != "user":
            turns.insert(0, _m("user", ""))
        turns[0] = _m("user", _join(text, turns[0]["content"]))
        system = []
    return system + turns


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)
