"""Prompt assembly, in one place: character + history -> OpenAI-style messages.

The system message depends only on the character, the system prompt and the names, never on the history,
so it stays identical token for token from turn to turn and the backend can reuse its cached prefix.
"""

from __future__ import annotations

import re
from typing import Any

from .characters import Character
from .template_rules import LENIENT, TemplateRules, conform

_MACRO = re.compile(r"\{\{\s*(char|user|original)\s*\}\}|<(BOT|USER)>", re.IGNORECASE)
_START = re.compile(r"<START>", re.IGNORECASE)


def render_macros(text: str, char_name: str, user_name: str, original: str = "") -> str:
    """Replace {{char}}, {{user}} (any case; legacy <BOT>, <USER>) and {{original}} in one pass.

    Replacements are not scanned again, so a user named "{{char}}" stays "{{char}}".
    """

    def sub(m: re.Match[str]) -> str:
        key = (m.group(1) or m.group(2)).lower()
        if key in ("char", "bot"):
            return char_name
        return user_name if key == "user" else original

    return _MACRO.sub(sub, text)


def split_examples(example_dialogue: str) -> list[str]:
    """Example conversations, split on <START>; empty ones dropped."""
    return [part.strip() for part in _START.split(example_dialogue) if part.strip()]


def system_message(
    character: Character | None,
    *,
    system_prompt: str | None = None,
    default_system_prompt: str = "",
    user_name: str = "User",
    assistant_name: str = "Assistant",
) -> str:
    """The system prompt followed by the character's description, personality, scenario and examples.

    The prompt is `system_prompt` when given, else the character's own, else `default_system_prompt`.
    {{original}} in it stands for `default_system_prompt`. creator_notes never reach the model.
    """
    char = character.display_name if character else assistant_name

    def r(text: str, original: str = "") -> str:
        return render_macros(text, char, user_name, original).strip()

    if system_prompt is not None:
        prompt = system_prompt
    elif character is not None and character.system_prompt.strip():
        prompt = character.system_prompt
    else:
        prompt = default_system_prompt
    blocks = [r(prompt, default_system_prompt)]
    if character is not None:
        blocks.append(r(character.description))
        if character.personality.strip():
            blocks.append(f"{char}'s personality: {r(character.personality)}")
        if character.scenario.strip():
            blocks.append(f"Scenario: {r(character.scenario)}")
        examples = [r(ex) for ex in split_examples(character.example_dialogue)]
        if any(examples):
            body = "\n\n".join(f"<example>\n{ex}\n</example>" for ex in examples if ex)
            blocks.append(f"Example dialogue between {char} and {user_name} (style reference only):\n{body}")
    return "\n\n".join(b for b in blocks if b)


def assemble(
    character: Character | None,
    history: list[dict[str, Any]],
    *,
    system_prompt: str | None = None,
    default_system_prompt: str = "",
    user_name: str = "User",
    assistant_name: str = "Assistant",
    rules: TemplateRules = LENIENT,
) -> list[dict[str, str]]:
    """[system, *history (user/assistant only, role + content), post-history system note], conformed to
    the chat template's `rules` (engine/template_rules.py): with a strict template the note goes into the
    last user message instead."""
    messages: list[dict[str, str]] = []
    system = system_message(
        character,
        system_prompt=system_prompt,
        default_system_prompt=default_system_prompt,
        user_name=user_name,
        assistant_name=assistant_name,
    )
    if system:
        messages.append({"role": "system", "content": system})
    for msg in history:
        role = msg.get("role")
        if role in ("user", "assistant"):
            messages.append({"role": str(role), "content": content_text(msg.get("content"))})
    if character is not None and character.post_history_instructions.strip():
        note = render_macros(character.post_history_instructions, character.display_name, user_name).strip()
        messages.append({"role": "system", "content": note})
    return conform(messages, rules)


def content_text(content: Any) -> str:
    """Message content as text; OpenAI's list-of-parts form keeps its text parts."""
    if content is None:
        return ""
    if isinstance(content, list):
        parts = (p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "".join(str(p) for p in parts)
    return str(content)


def greetings(character: Character | None, user_name: str = "User") -> list[str]:
    """The greeting, then the alternate greetings, with macros rendered; empty ones left out."""
    if character is None:
        return []
    texts = [character.greeting, *character.alternate_greetings]
    return [render_macros(t, character.display_name, user_name) for t in texts if t.strip()]
