"""Group chats: who speaks next, the group's system prompt, and speaker names in the history.

Pure functions, no I/O. The order follows SillyTavern's group chats:
- natural: the characters named in the last message speak first, in the order they are named; then each
  other member speaks with the probability of its card's `talkativeness`, drawn from a RNG seeded with
  the chat's seed and the length of the history (so a regenerated turn picks the same speakers); if
  nobody was picked, one member at random. The character who wrote the last message does not answer
  itself unless `allow_self`.
- list: the member after the last one who spoke, in the group's order.
- manual: nobody; the user picks (a forced speaker).
Muted members never speak unless forced.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .characters import Character
from .errors import InvalidInput
from .prompt import Placed, render_macros, render_outlets, split_examples, system_message

DEFAULT_TALKATIVENESS = 0.5
Order = Literal["natural", "list", "manual"]
PromptMode = Literal["join", "swap"]


class GroupSettings(BaseModel):
    """A group chat's settings, as stored in the session."""

    model_config = ConfigDict(extra="forbid")

    order: Order = Field("natural", description="Who speaks next: natural, list (in turn) or manual.")
    muted: list[str] = Field(default_factory=list, description="Members who never speak unless forced.")
    allow_self: bool = Field(False, description="A character may answer its own message.")
    prompt: PromptMode = Field(
        "join", description="join: every card in the prompt (kind to the KV cache); swap: the speaker's."
    )

    @field_validator("muted")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


@dataclass(frozen=True)
class Member:
    """One character of a group: its name (the preset's id), display name and talkativeness (0..1)."""

    name: str
    title: str = ""
    talkativeness: float = DEFAULT_TALKATIVENESS

    @property
    def display_name(self) -> str:
        return self.title or self.name

    @classmethod
    def from_character(cls, character: Character) -> Member:
        return cls(character.name, character.display_name, talkativeness(character))


def talkativeness(character: Character | Mapping[str, Any]) -> float:
    """The card's talkativeness (SillyTavern's `data.extensions.talkativeness`, or the V1 top-level
    field), clamped to 0..1. A missing or unreadable value (a string that is no number, NaN, a bool)
    gives the default, 0.5. `character` may also be a raw card dict."""
    if isinstance(character, Character):
        card = character.card
        places = [_get(card, "data", "extensions"), card.get("data"), card.get("top")]
    else:
        places = [_get(character, "data", "extensions"), character.get("extensions"), character]
    for place in places:
        if isinstance(place, Mapping) and "talkativeness" in place:
            value = _number(place["talkativeness"])
            if value is not None:
                return min(1.0, max(0.0, value))
    return DEFAULT_TALKATIVENESS


def _get(obj: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)  # type: ignore[assignment]
    return obj


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


# ---- who speaks next --------------------------------------------------------------------------------


def resolve_member(members: Sequence[Member], name: str) -> Member:
    """The member called `name` (its id, or its display name in any case); InvalidInput naming the
    members otherwise."""
    for m in members:
        if m.name == name:
            return m
    folded = name.strip().casefold()
    for m in members:
        if folded and folded in (m.name.casefold(), m.display_name.casefold()):
            return m
    names = ", ".join(m.name for m in members) or "none"
    raise InvalidInput(f"'{name[:64]}' is not in this group chat; its members are: {names}.", field="speaker")


def next_speakers(
    members: Sequence[Member],
    history: Sequence[Mapping[str, Any]],
    settings: GroupSettings,
    seed: int,
    forced: str | None = None,
) -> list[str]:
    """The names of the members who answer next, in order (may be empty: in manual order, or when the
    only member who may speak wrote the last message). `forced` (the "Speak now" button, the API's
    `speaker`) overrides everything, mutes included. `history` holds dicts with role, content and, for a
    character's message, `name`."""
    if not members:
        raise InvalidInput("A group chat needs at least one character.")
    if forced is not None:
        return [resolve_member(members, forced).name]
    muted = set(settings.muted)
    active = [m for m in members if m.name not in muted]
    if settings.order == "manual" or not active:
        return []
    if settings.order == "list":
        return _list_order(members, active, history)
    return _natural_order(active, history, settings, seed)


def _speaker(message: Mapping[str, Any]) -> str | None:
    name = message.get("name")
    return name if message.get("role") == "assistant" and isinstance(name, str) and name else None


def _list_order(
    members: Sequence[Member], active: list[Member], history: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The first active member after the last character who spoke, in the group's order."""
    last = next((s for s in map(_speaker, reversed(history)) if s is not None), None)
    names = [m.name for m in members]
    if last not in names:
        return [active[0].name]
    start = names.index(last)
    allowed = {m.name for m in active}
    for step in range(1, len(names) + 1):
        candidate = names[(start + step) % len(names)]
        if candidate in allowed:
            return [candidate]
    return []  # unreachable: `active` is not empty


def mentioned(text: str, members: Sequence[Member]) -> list[str]:
    """Members named in `text` (their id or display name as a whole word, any case), in the order of
    their first mention."""
    found: list[tuple[int, str]] = []
    for m in members:
        positions = [
            hit.start()
            for label in dict.fromkeys((m.name, m.display_name))
            if label.strip()
            and (hit := re.search(rf"(?<!\w){re.escape(label.strip())}(?!\w)", text, re.IGNORECASE))
        ]
        if positions:
            found.append((min(positions), m.name))
    return [name for _, name in sorted(found)]


def _natural_order(
    active: list[Member], history: Sequence[Mapping[str, Any]], settings: GroupSettings, seed: int
) -> list[str]:
    last = history[-1] if history else {}
    banned = None if settings.allow_self else _speaker(last)
    candidates = [m for m in active if m.name != banned]
    if not candidates:
        return []
    text = last.get("content")
    picked = mentioned(text, candidates) if isinstance(text, str) else []
    rng = random.Random(seed + len(history))
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    for m in shuffled:
        if rng.random() < m.talkativeness and m.name not in picked:
            picked.append(m.name)
    if not picked:
        picked.append(rng.choice(candidates).name)
    return picked


# ---- the prompt -------------------------------------------------------------------------------------


def _joined(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def speaker_line(speaker: str) -> str:
    """The one line that names who speaks now: the last line of a "join" system prompt."""
    return f"Write the next reply only as {speaker}."


def group_system_prompt(
    characters: Sequence[Character],
    speaker: str,
    mode: PromptMode = "join",
    *,
    system_prompt: str | None = None,
    default_system_prompt: str = "",
    user_name: str = "User",
    placed: Placed | None = None,
) -> str:
    """The system message of a group chat's turn, for `speaker` (a member's name or display name).

    join: the system prompt, then every character's card (description, personality, scenario, example
    dialogue, as engine.prompt renders a single card, with {{char}} as that character) under its name,
    then the lore and persona, then one line naming the speaker. Everything but that last line is the
    same whoever speaks, so the backend reuses the cached prefix. {{char}} in the shared parts (the system
    prompt, the lore) renders to the joined names ("Alice, Bob and Carol").
    swap: the speaker's card alone, exactly as in a single-character chat, then a line naming the others
    and the speaker line.
    """
    if not characters:
        raise InvalidInput("A group chat needs at least one character.")
    members = [Member(c.name, c.display_name) for c in characters]
    who = resolve_member(members, speaker)
    current = next(c for c in characters if c.name == who.name)
    if mode == "swap":
        others = [c.display_name for c in characters if c.name != who.name]
        body = system_message(
            current,
            system_prompt=system_prompt,
            default_system_prompt=default_system_prompt,
            user_name=user_name,
            placed=placed,
        )
        tail = [f"Also in this chat: {_joined(others)}."] if others else []
        return "\n\n".join([b for b in (body, *tail) if b] + [speaker_line(current.display_name)])
    shared = group_prompt_prefix(
        characters,
        system_prompt=system_prompt,
        default_system_prompt=default_system_prompt,
        user_name=user_name,
        placed=placed,
    )
    return "\n\n".join(b for b in (shared, speaker_line(current.display_name)) if b)


def group_prompt_prefix(
    characters: Sequence[Character],
    *,
    system_prompt: str | None = None,
    default_system_prompt: str = "",
    user_name: str = "User",
    placed: Placed | None = None,
) -> str:
    """The part of a "join" system prompt that is the same whoever speaks (all but the speaker line).

    The prompt is `system_prompt` when given, else `default_system_prompt` (a card's own system prompt
    applies in "swap" mode only: in a group, they would contradict each other).
    """
    names = _joined([c.display_name for c in characters])
    placed = placed or Placed()

    def r(text: str, original: str = "") -> str:
        return render_outlets(render_macros(text, names, user_name, original), placed.outlets).strip()

    prompt = system_prompt if system_prompt is not None else default_system_prompt
    blocks = [r(prompt, default_system_prompt), "\n".join(placed.before).strip()]
    blocks.append(f"This is a group chat between {user_name} and {names}.")
    for c in characters:
        card = system_message(c, system_prompt="", user_name=user_name)
        blocks.append(f"## {c.display_name}\n{card}" if card else f"## {c.display_name}")
    blocks += ["\n".join(placed.after).strip(), r(placed.persona)]
    lore = [ex for text in (*placed.examples_top, *placed.examples_bottom) for ex in split_examples(text)]
    if lore:
        body = "\n\n".join(f"<example>\n{ex}\n</example>" for ex in lore)
        blocks.append(f"Example dialogue (style reference only):\n{body}")
    return "\n\n".join(b for b in blocks if b)


# ---- names in the history ---------------------------------------------------------------------------


def _has_prefix(content: str, name: str) -> bool:
    return content[: len(name) + 1].casefold() == f"{name}:".casefold()


def name_history(
    history: Sequence[Mapping[str, Any]], display: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """A copy of `history` for the prompt in which each past character message (an assistant message with
    a `name`) starts with "Name: ", unless it already does. `display` maps member names to display names
    (a name missing from it is used as is). The stored messages are not changed."""
    display = display or {}
    out: list[dict[str, Any]] = []
    for msg in history:
        speaker = _speaker(msg)
        content = msg.get("content")
        if speaker is not None and isinstance(content, str) and content:
            label = display.get(speaker, speaker)
            if not _has_prefix(content, label):
                msg = {**msg, "content": f"{label}: {content}"}
        out.append(dict(msg))
    return out


def strip_speaker(reply: str, names: Sequence[str]) -> str:
    """A generated reply without a leading "Name:" that the model wrote itself (it saw the history named
    that way). Only the names given are stripped, once."""
    for name in names:
        if name and _has_prefix(reply.lstrip(), name):
            return reply.lstrip()[len(name) + 1 :].lstrip()
    return reply
