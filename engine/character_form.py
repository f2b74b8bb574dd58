"""A character as plain text fields, for editors (the web UI, a terminal form): and back, with clear errors.

Alternate greetings are one block each, separated by a line holding only `---`; tags are comma-separated;
sampling overrides are YAML or JSON text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from .characters import TEXT_FIELDS, Character, check_name, load_yaml, safe_name, type_name
from .errors import InvalidInput

FORM_FIELDS = Character.form_fields
_SEPARATOR = re.compile(r"^[ \t]*---[ \t]*$", re.MULTILINE)


def split_greetings(text: str) -> list[str]:
    """Blocks separated by a `---` line, trimmed; empty blocks dropped."""
    return [block.strip() for block in _SEPARATOR.split(text or "") if block.strip()]


def join_greetings(greetings: list[str]) -> str:
    return "\n---\n".join(g.strip() for g in greetings)


def parse_tags(text: str) -> list[str]:
    """Comma- or line-separated tags, trimmed, duplicates (any case) dropped."""
    out: list[str] = []
    for tag in re.split(r"[,\n]", text or ""):
        tag = tag.strip()
        if tag and tag.casefold() not in (t.casefold() for t in out):
            out.append(tag)
    return out


def parse_sampling(text: str) -> dict[str, Any]:
    """YAML or JSON text -> a mapping of sampling overrides (checked later by Character)."""
    if not (text or "").strip():
        return {}
    data = load_yaml(text, "sampling overrides")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(
            f"Sampling overrides must be a mapping such as 'temperature: 0.7', not {type_name(data)}.",
            field="sampling",
        )
    return data


def sampling_text(sampling: dict[str, Any]) -> str:
    if not sampling:
        return ""
    return yaml.safe_dump(sampling, allow_unicode=True, sort_keys=False, default_flow_style=False)


def form_from_character(character: Character) -> dict[str, str]:
    """Every FORM_FIELDS entry as text."""
    out = {"name": character.name}
    out.update({f: getattr(character, f) for f in TEXT_FIELDS})
    out["alternate_greetings"] = join_greetings(character.alternate_greetings)
    out["tags"] = ", ".join(character.tags)
    out["sampling"] = sampling_text(character.sampling)
    return out


def character_from_form(fields: dict[str, Any], base: Character | None = None) -> Character:
    """Build a Character from text fields. `base` supplies what a form does not show (avatar, card data).

    Raises InvalidInput naming the field.
    """
    name = str(fields.get("name") or "").strip()
    try:
        check_name(name)
    except InvalidInput as exc:
        raise InvalidInput(f"Name: {exc.message}.", field="name") from None
    data: dict[str, Any] = base.model_dump() if base is not None else {}
    data.update({f: str(fields.get(f) or "") for f in TEXT_FIELDS})
    data.update(
        name=name,
        alternate_greetings=split_greetings(str(fields.get("alternate_greetings") or "")),
        tags=parse_tags(str(fields.get("tags") or "")),
        sampling=parse_sampling(str(fields.get("sampling") or "")),
    )
    return Character.from_dict(data, source="character")


def unique_name(taken: Iterable[str], base: str) -> str:
    """`base` made a valid preset name, with -2, -3 ... added until no name in `taken` (any case) has it."""
    used = {t.casefold() for t in taken}
    base = safe_name(base)[:56]
    name, n = base, 2
    while name.casefold() in used:
        name, n = f"{base}-{n}", n + 1
    return name
