"""Group chats in a session: its members, who answers this turn, and the prompt's group parts.

The speaker choice and the prompt text are engine.group_chat's; this module ties them to a Session.
A message's `name` is its speaker's display name (as SillyTavern keeps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .characters import Character
from .errors import InvalidInput
from .group_chat import GroupSettings, Member, next_speakers, resolve_member
from .session_formats import ChatMessage, Session


def is_group(session: Session) -> bool:
    return bool(session.characters)


def members_of(session: Session) -> list[Character]:
    return [Character.model_validate(c) for c in session.characters]


def settings_of(session: Session) -> GroupSettings:
    try:
        return GroupSettings.model_validate(session.group or {})
    except ValidationError as exc:
        raise InvalidInput(f"The group chat's settings are not valid: {exc.errors()[0]['msg']}.") from None


def check_group(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Validated group settings as stored (InvalidInput for a bad value)."""
    try:
        return GroupSettings.model_validate(settings or {}).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise InvalidInput(f"group.{where}: {err['msg']}.", field="group") from None


def speaker_history(characters: Sequence[Character], messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The visible path as group_chat reads it: each character's message names its member (by id)."""
    members = [Member.from_character(c) for c in characters]
    out: list[dict[str, Any]] = []
    for m in messages:
        item = m.to_openai()  # with a call's tool_calls, a result's tool_call_id and tool name
        if m.role == "assistant" and m.name:
            try:
                item["name"] = resolve_member(members, m.name).name
            except InvalidInput:  # someone who left the group: still a name
                item["name"] = m.name
        out.append(item)
    return out


def choose_speaker(
    session: Session, messages: Sequence[ChatMessage], seed: int, forced: str | None
) -> Character:
    """Who answers now: `forced`, else the group's order (natural, list); in manual order a speaker
    must be named. When the order picks nobody (only the last speaker may talk), the first member who
    is not muted answers."""
    characters = members_of(session)
    settings = settings_of(session)
    members = [Member.from_character(c) for c in characters]
    names = next_speakers(members, speaker_history(characters, messages), settings, seed, forced=forced)
    if not names:
        if settings.order == "manual":
            who = ", ".join(c.display_name for c in characters)
            raise InvalidInput(f"This group chat picks speakers by hand: name one ({who}).", field="speaker")
        active = [c for c in characters if c.name not in settings.muted] or characters
        return active[0]
    return next(c for c in characters if c.name == names[0])


def check_speaker(session: Session, forced: str | None) -> None:
    """Refuse now what choose_speaker would refuse later (an unknown name; manual order with none)."""
    if not is_group(session):
        if forced is not None:
            raise InvalidInput("Only a group chat takes a speaker.", field="speaker")
        return
    characters = members_of(session)
    if forced is not None:
        resolve_member([Member.from_character(c) for c in characters], forced)
    elif settings_of(session).order == "manual":
        who = ", ".join(c.display_name for c in characters)
        raise InvalidInput(f"This group chat picks speakers by hand: name one ({who}).", field="speaker")
