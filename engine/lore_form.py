"""A lorebook entry as form fields (text, numbers, choices) and back, and "test activation" on pasted text.
No UI code: the Lorebooks tab and the terminal use these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import LoreSettings
from .errors import InvalidInput
from .lore_scan import ScanInput, Source, activate
from .lorebook import LOGIC, POSITIONS, ROLES, Book, Entry

TRI = {"default": None, "yes": True, "no": False}  # a per-entry override of a book-wide setting
FORM_FIELDS = (
    "comment",
    "key",
    "keysecondary",
    "selectiveLogic",
    "content",
    "constant",
    "disable",
    "order",
    "position",
    "depth",
    "role",
    "probability",
    "useProbability",
    "group",
    "groupOverride",
    "groupWeight",
    "scanDepth",
    "caseSensitive",
    "matchWholeWords",
    "excludeRecursion",
    "preventRecursion",
    "delayUntilRecursion",
)
LOGIC_CHOICES = [(name, str(v)) for v, name in LOGIC.items()]
POSITION_CHOICES = [(name, str(v)) for v, name in POSITIONS.items()]
ROLE_CHOICES = [(name, str(v)) for v, name in ROLES.items()]


def form_from_entry(entry: Entry) -> dict[str, Any]:
    """Form values: keys one per line (a regex key may hold commas), choices as text, blanks for null."""

    def tri(v: bool | None) -> str:
        return "default" if v is None else "yes" if v else "no"

    delay = entry.delayUntilRecursion
    return {
        "comment": entry.comment,
        "key": "\n".join(entry.key),
        "keysecondary": "\n".join(entry.keysecondary),
        "selectiveLogic": str(entry.selectiveLogic or 0),
        "content": entry.content,
        "constant": entry.constant,
        "disable": entry.disable,
        "order": entry.order if entry.order is not None else 100,
        "position": str(entry.position if entry.position is not None else 0),
        "depth": entry.depth if entry.depth is not None else 4,
        "role": str(entry.role or 0),
        "probability": entry.probability if entry.probability is not None else 100,
        "useProbability": entry.useProbability,
        "group": entry.group,
        "groupOverride": entry.groupOverride,
        "groupWeight": entry.groupWeight if entry.groupWeight is not None else 100,
        "scanDepth": entry.scanDepth,
        "caseSensitive": tri(entry.caseSensitive),
        "matchWholeWords": tri(entry.matchWholeWords),
        "excludeRecursion": entry.excludeRecursion,
        "preventRecursion": entry.preventRecursion,
        "delayUntilRecursion": int(delay) if delay else 0,
    }


def entry_from_form(values: dict[str, Any], base: Entry) -> Entry:
    """`base` with the form's values; fields the form does not show (and unknown ones) are kept."""

    def lines(text: Any) -> list[str]:
        return [s.strip() for s in str(text or "").splitlines() if s.strip()]

    def number(name: str, v: Any, *, whole: bool = True, blank: Any = 0) -> Any:
        if v is None or v == "":
            return blank
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InvalidInput(f"'{name}' must be a number, got {str(v)[:20]!r}.", field=name) from None
        if f != f or f in (float("inf"), float("-inf")):
            raise InvalidInput(f"'{name}' must be a finite number.", field=name)
        return int(f) if whole or f.is_integer() else f

    delay = number("delayUntilRecursion", values.get("delayUntilRecursion"))
    update = {
        "comment": str(values.get("comment") or ""),
        "key": lines(values.get("key")),
        "keysecondary": lines(values.get("keysecondary")),
        "selectiveLogic": number("selectiveLogic", values.get("selectiveLogic")),
        "content": str(values.get("content") or ""),
        "constant": bool(values.get("constant")),
        "disable": bool(values.get("disable")),
        "order": number("order", values.get("order"), whole=False, blank=100),
        "position": number("position", values.get("position")),
        "depth": number("depth", values.get("depth"), blank=4),
        "role": number("role", values.get("role")),
        "probability": number("probability", values.get("probability"), whole=False, blank=100),
        "useProbability": bool(values.get("useProbability")),
        "group": str(values.get("group") or ""),
        "groupOverride": bool(values.get("groupOverride")),
        "groupWeight": number("groupWeight", values.get("groupWeight"), whole=False, blank=100),
        "scanDepth": number("scanDepth", values.get("scanDepth"), blank=None),
        "caseSensitive": TRI.get(str(values.get("caseSensitive"))),
        "matchWholeWords": TRI.get(str(values.get("matchWholeWords"))),
        "excludeRecursion": bool(values.get("excludeRecursion")),
        "preventRecursion": bool(values.get("preventRecursion")),
        "delayUntilRecursion": delay if delay else False,
    }
    from .lorebook import _entry

    return _entry({**base.model_dump(), **update}, f"entry {base.uid}")


def new_entry(book: Book) -> Entry:
    return Entry(uid=book.next_uid(), comment="New entry", key=[], content="")


def test_activation(
    books: list[tuple[str, Book]],
    text: str,
    settings: LoreSettings,
    count: Callable[[str], int],
    *,
    context_size: int = 4096,
) -> list[dict[str, Any]]:
    """Which entries fire for `text`, and why. Each non-empty paragraph is one message, the last newest."""
    messages = [("", p.strip()) for p in text.split("\n\n") if p.strip()]
    sources = [Source(name, book) for name, book in books]
    act = activate(sources, ScanInput(messages=messages, context_size=context_size), settings, count)
    return [f.report() for f in act.fired] + [{"warning": w} for w in act.warnings]
