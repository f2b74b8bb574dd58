"""Prompt assembly, in one place: character + history -> OpenAI-style messages.

The system message depends only on the character, the system prompt and the names, never on the history,
so it stays identical token for token from turn to turn and the backend can reuse its cached prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .characters import Character
from .lore_scan import Fired
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


@dataclass
class Placed:
    """Activated lore and the persona's description, sorted into their places in the prompt."""

    before: list[str] = field(default_factory=list)  # before the character's definitions
    after: list[str] = field(default_factory=list)  # after them
    persona: str = ""  # the persona's description, in the system message
    examples_top: list[str] = field(default_factory=list)
    examples_bottom: list[str] = field(default_factory=list)
    depth: dict[tuple[int, str], list[str]] = field(default_factory=dict)  # (depth, role) -> texts
    outlets: dict[str, str] = field(default_factory=dict)


AN_DEPTH = 4  # SillyTavern's Author's Note default: depth 4, as a system message


def place(
    fired: Sequence[Fired], persona: str = "", persona_at: tuple[str, int, str] = ("system", 0, "system")
) -> Placed:
    """Sort lore into positions by insertion order (lowest first, so the highest is nearest the end).

    Author's Note positions go where SillyTavern's default (empty) Author's Note goes: at depth 4 as a
    system message, ahead of any lore of that same depth and role, as do a persona placed at a depth.
    """
    out = Placed()
    an_top: list[str] = []
    an_bottom: list[str] = []
    lore_depth: dict[tuple[int, str], list[str]] = {}
    outlets: dict[str, list[str]] = {}
    for f in sorted(fired, key=lambda f: f.order):
        text = f.content
        if not text:
            continue
        if f.position == 0:
            out.before.append(text)
        elif f.position == 1:
            out.after.append(text)
        elif f.position == 2:
            an_top.append(text)
        elif f.position == 3:
            an_bottom.append(text)
        elif f.position == 4:
            lore_depth.setdefault((f.depth, f.role), []).append(text)
        elif f.position == 5:
            out.examples_top.insert(0, text)  # SillyTavern prepends each in turn: highest order first
        elif f.position == 6:
            out.examples_bottom.append(text)
        elif f.position == 7 and f.outlet.strip():
            outlets.setdefault(f.outlet.strip(), []).append(text)
    if an_top or an_bottom:
        out.depth[(AN_DEPTH, "system")] = ["\n".join(an_top + an_bottom)]
    where, depth, role = persona_at
    if persona.strip() and where == "system":
        out.persona = persona
    elif persona.strip() and where == "depth":
        out.depth.setdefault((depth, role), []).append(persona)
    for key, texts in lore_depth.items():
        out.depth.setdefault(key, []).append("\n".join(texts))
    out.outlets = {k: "\n".join(v) for k, v in outlets.items()}
    return out


_OUTLET = re.compile(r"\{\{outlet::(.*?)\}\}")


def render_outlets(text: str, outlets: dict[str, str]) -> str:
    return _OUTLET.sub(lambda m: outlets.get(m.group(1).strip(), ""), text) if "{{outlet::" in text else text


def inject_at_depth(
    history: list[dict[str, Any]], depth: dict[tuple[int, str], list[str]], *, continuing: bool = False
) -> list[dict[str, Any]]:
    """Insert messages `depth` messages from the end (0: after the last one). At one depth the system
    message goes last, after the user and the assistant ones. A reply being continued stays last, and
    the prompt never ends with an inserted assistant message."""
    if not depth:
        return history
    out = list(reversed(history))  # newest first, as depths count
    inserted = 0
    for d in sorted({d for d, _ in depth}):
        msgs = [
            {"role": role, "content": "\n".join(t for t in depth.get((d, role), []) if t)}
            for role in ("system", "user", "assistant")
        ]
        msgs = [m for m in msgs if m["content"].strip()]
        if not msgs:
            continue
        # depth 0 stays above a reply being continued; and an assistant message alone at depth 0 would
        # end the prompt and be taken as the start of the reply, so it goes above the last message too
        alone = all(m["role"] == "assistant" for m in msgs)
        at = (1 if d == 0 and (continuing or alone) else d) + inserted
        out[at:at] = msgs
        inserted += len(msgs)
    return list(reversed(out))


def system_message(
    character: Character | None,
    *,
    system_prompt: str | None = None,
    default_system_prompt: str = "",
    user_name: str = "User",
    assistant_name: str = "Assistant",
    placed: Placed | None = None,
) -> str:
    """The system prompt, lore placed before the character, the character's description, personality
    and scenario, lore placed after it, the persona's description, then the example dialogue.

    The prompt is `system_prompt` when given, else the character's own, else `default_system_prompt`.
    {{original}} in it stands for `default_system_prompt`. creator_notes never reach the model.
    """
    char = character.display_name if character else assistant_name
    placed = placed or Placed()

    def r(text: str, original: str = "") -> str:
        return render_outlets(render_macros(text, char, user_name, original), placed.outlets).strip()

    if system_prompt is not None:
        prompt = system_prompt
    elif character is not None and character.system_prompt.strip():
        prompt = character.system_prompt
    else:
        prompt = default_system_prompt
    blocks = [r(prompt, default_system_prompt), "\n".join(placed.before).strip()]
    if character is not None:
        blocks.append(r(character.description))
        if character.personality.strip():
            blocks.append(f"{char}'s personality: {r(character.personality)}")
        if character.scenario.strip():
            blocks.append(f"Scenario: {r(character.scenario)}")
    blocks += ["\n".join(placed.after).strip(), r(placed.persona)]
    examples = [ex for text in placed.examples_top for ex in split_examples(text)]
    if character is not None:
        examples += [r(ex) for ex in split_examples(character.example_dialogue)]
    examples += [ex for text in placed.examples_bottom for ex in split_examples(text)]
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
    placed: Placed | None = None,
    continuing: bool = False,
    rules: TemplateRules = LENIENT,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """[system, *history (user/assistant/tool turns; see turn_message) with lore at its depths, post-history
    system note], conformed to the chat template's `rules` (engine/template_rules.py): with a strict
    template, system notes after the first turn go into the last user message instead. `continuing`: the
    last history message is a reply being continued; it stays last. `system`: the system message, made
    elsewhere (a group chat's)."""
    messages: list[dict[str, Any]] = []
    system = (
        system
        if system is not None
        else system_message(
            character,
            system_prompt=system_prompt,
            default_system_prompt=default_system_prompt,
            user_name=user_name,
            assistant_name=assistant_name,
            placed=placed,
        )
    )
    if system:
        messages.append({"role": "system", "content": system})
    turns = [turn_message(msg) for msg in history if _is_turn(msg)]
    if placed is not None:
        turns = inject_at_depth(turns, placed.depth, continuing=continuing)
    messages += turns
    if character is not None and character.post_history_instructions.strip():
        note = render_macros(character.post_history_instructions, character.display_name, user_name)
        note = render_outlets(note, placed.outlets if placed else {}).strip()
        if note:
            messages.append({"role": "system", "content": note})
    if continuing and messages and messages[-1]["role"] == "system" and turns:
        note_msg = messages.pop()
        messages.insert(len(messages) - 1, note_msg)  # keep the reply being continued last
    return conform(messages, rules)


def _is_turn(msg: dict[str, Any]) -> bool:
    """User and assistant messages, and tool results that answer a call (they name its id)."""
    role = msg.get("role")
    return role in ("user", "assistant") or (role == "tool" and bool(msg.get("tool_call_id")))


def turn_message(msg: dict[str, Any]) -> dict[str, Any]:
    """A history message as the model gets it: role and content, and a tool call's or result's fields."""
    out = {"role": str(msg.get("role")), "content": content_text(msg.get("content"))}
    if msg.get("tool_calls"):
        out["tool_calls"] = msg["tool_calls"]
    if out["role"] == "tool":
        out |= {k: msg[k] for k in ("tool_call_id", "name") if msg.get(k)}
    return out


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
