"""Lorebooks (SillyTavern "world info"): the model of a book and its entries, and their file formats.

A book is kept in SillyTavern's world-info shape (`{"entries": {"<uid>": {...}}}`, camelCase fields), so
an export is SillyTavern's own format and a round trip keeps every field, unknown ones included. A card's
embedded `character_book` (Character Card V2/V3) is converted the way SillyTavern converts it. Activation
lives in engine.lore_scan; files in engine.lore_store.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .characters import check_json_value, type_name
from .errors import InvalidInput, TooLarge

MAX_BYTES = 10 * 1024 * 1024
MAX_ENTRIES = 5000
DEFAULT_DEPTH = 4
DEFAULT_WEIGHT = 100

# SillyTavern's enums, as stored in world-info files.
LOGIC = {0: "AND ANY", 1: "NOT ALL", 2: "NOT ANY", 3: "AND ALL"}
POSITIONS = {
    0: "before_char",
    1: "after_char",
    2: "an_top",
    3: "an_bottom",
    4: "at_depth",
    5: "examples_top",
    6: "examples_bottom",
    7: "outlet",
}
ROLES = {0: "system", 1: "user", 2: "assistant"}
TRIGGERS = ("normal", "continue", "impersonate", "swipe", "regenerate", "quiet")
Number = int | float


class Entry(BaseModel):
    """One world-info entry, with SillyTavern's field names. Unknown fields are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)

    uid: int = Field(ge=0, le=2**53)
    key: list[str] = Field(default_factory=list, description="Primary keys; '/re/flags' is a regex.")
    keysecondary: list[str] = Field(default_factory=list, description="Optional filter keys.")
    comment: str = Field("", description="Title / memo; never sent to the model.")
    content: str = Field("", description="The text put into the prompt.")
    constant: bool = False
    vectorized: bool = False
    selective: bool = True
    selectiveLogic: int | None = Field(
        0, ge=0, le=3, description="0 AND ANY, 1 NOT ALL, 2 NOT ANY, 3 AND ALL."
    )
    addMemo: bool = False
    order: Number | None = Field(100, description="Insertion order: higher goes later (closer to the end).")
    position: int | None = Field(
        0, ge=0, le=1000, description="0 before char, 1 after, 2/3 AN, 4 @depth, 5/6 examples, 7 outlet."
    )
    disable: bool = False
    excludeRecursion: bool = Field(False, description="Not activated by other entries' content.")
    preventRecursion: bool = Field(False, description="Its content activates no other entry.")
    delayUntilRecursion: bool | int = Field(False, description="Only activated by recursion (at this level).")
    probability: Number | None = Field(100, description="Chance in percent to be inserted when activated.")
    useProbability: bool = True
    depth: int | None = Field(DEFAULT_DEPTH, ge=0, le=10_000)
    group: str = Field("", description="Inclusion groups, comma separated: one winner each.")
    groupOverride: bool = Field(False, description="Prioritize: the highest order wins its group.")
    groupWeight: Number | None = Field(DEFAULT_WEIGHT, ge=0)
    scanDepth: int | None = Field(None, ge=0, le=1000, description="Messages scanned; null: the book's.")
    caseSensitive: bool | None = None
    matchWholeWords: bool | None = None
    useGroupScoring: bool | None = None
    automationId: str = ""
    role: int | None = Field(0, ge=0, le=2, description="For @depth: 0 system, 1 user, 2 assistant.")
    sticky: int | None = None
    cooldown: int | None = None
    delay: int | None = Field(None, description="Not activated before the chat has this many messages.")
    displayIndex: int | None = None

    @field_validator("key", "keysecondary", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):  # some tools write one comma-separated string
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @field_validator("comment", "content", "group", "automationId", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if v is None else v

    # --- derived ---------------------------------------------------------------------------------

    def extra_fields(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})

    def groups(self) -> list[str]:
        return [g.strip() for g in self.group.split(",") if g.strip()]

    def title(self) -> str:
        return self.comment or ", ".join(self.key)[:60] or f"entry {self.uid}"


class Book(BaseModel):
    """A lorebook: entries by uid (as text, SillyTavern's keys) plus the book's own settings.

    `scan_depth`, `token_budget` and `recursive_scanning` come from a card's character_book; they are
    written back at the top level of the export, where SillyTavern ignores them.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    entries: dict[str, Entry] = Field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    scan_depth: int | None = Field(None, ge=0, le=1000)
    token_budget: int | None = Field(None, ge=0)
    recursive_scanning: bool | None = None

    def ordered(self) -> list[Entry]:
        return list(self.entries.values())

    def next_uid(self) -> int:
        return max((e.uid for e in self.entries.values()), default=-1) + 1


# --- import -------------------------------------------------------------------------------------------


def parse_book(data: bytes, source: str = "the file") -> Book:
    """Read a SillyTavern world-info JSON, a character_book object, or a character card (JSON or PNG)
    that embeds one. Raises InvalidInput that says what is wrong and where, or TooLarge."""
    if len(data) > MAX_BYTES:
        raise TooLarge(f"{source} is {len(data) / 2**20:.1f} MB; lorebooks may be at most 10 MB.")
    from . import cards

    if data.startswith(cards.PNG_SIGNATURE):
        return book_from_card_png(data, source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{source} is not UTF-8 text (bad byte at offset {exc.start}). {EXPECTED}"
        ) from None
    if not text.strip():
        raise InvalidInput(f"{source} is empty. {EXPECTED}")
    return book_from_obj(cards.parse_json(text, source), source)


EXPECTED = (
    'Expected a SillyTavern world-info JSON ({"entries": {...}}), a character_book, '
    "or a character card with a character_book."
)


def book_from_obj(obj: Any, source: str = "the file") -> Book:
    if not isinstance(obj, dict):
        raise InvalidInput(f"{source}: expected a JSON object, got {type_name(obj)}. {EXPECTED}")
    check_json_value(obj)
    if obj.get("spec") in ("chara_card_v2", "chara_card_v3") or "character_book" in obj:
        inner = obj.get("data")
        data: dict[str, Any] = inner if isinstance(inner, dict) else obj
        book = data.get("character_book")
        if not isinstance(book, dict):
            raise InvalidInput(f"{source}: this character card has no character_book (lorebook) to import.")
        return book_from_character_book(book, source, fallback_name=str(data.get("name") or ""))
    entries = obj.get("entries")
    if isinstance(entries, list):
        return book_from_character_book(obj, source)
    if isinstance(entries, dict):
        return book_from_world_info(obj, source)
    raise InvalidInput(f"{source}: it has no 'entries' ({type_name(entries)}). {EXPECTED}")


def book_from_world_info(obj: dict[str, Any], source: str = "the file") -> Book:
    """SillyTavern's world-info JSON, validated field by field; nothing is dropped."""
    entries = obj.get("entries")
    if not isinstance(entries, dict):
        raise InvalidInput(f"{source}: 'entries' must be an object of entries by uid.")
    if len(entries) > MAX_ENTRIES:
        raise TooLarge(f"{source} has {len(entries)} entries; a lorebook may have at most {MAX_ENTRIES}.")
    parsed: dict[str, Entry] = {}
    for key, raw in entries.items():
        if not isinstance(raw, dict):
            raise InvalidInput(f"{source}: entries[{key!r}] must be an object, got {type_name(raw)}.")
        raw = dict(raw)
        if "uid" not in raw:
            if not key.isdecimal():
                raise InvalidInput(f"{source}: entries[{key!r}] has no 'uid' and its key is not a number.")
            raw["uid"] = int(key)
        parsed[key] = _entry(raw, f"{source}: entries[{key!r}]")
    rest = {k: v for k, v in obj.items() if k != "entries"}
    try:
        return Book.model_validate({**rest, "entries": parsed})
    except ValidationError as exc:
        raise _invalid(exc, source) from None


def _entry(raw: dict[str, Any], where: str) -> Entry:
    try:
        return Entry.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc, where) from None


def _invalid(exc: ValidationError, where: str) -> InvalidInput:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    shown = repr(err.get("input"))[:60]
    return InvalidInput(f"{where}: invalid '{loc}': {msg} (got {shown}).", field=loc or None)


# Character Card V2/V3 `character_book` <-> world info, field for field as SillyTavern maps them.
_EXT = {  # entry.extensions key -> world-info field
    "position": "position",
    "exclude_recursion": "excludeRecursion",
    "prevent_recursion": "preventRecursion",
    "delay_until_recursion": "delayUntilRecursion",
    "display_index": "displayIndex",
    "probability": "probability",
    "useProbability": "useProbability",
    "depth": "depth",
    "selectiveLogic": "selectiveLogic",
    "group": "group",
    "group_override": "groupOverride",
    "group_weight": "groupWeight",
    "scan_depth": "scanDepth",
    "case_sensitive": "caseSensitive",
    "match_whole_words": "matchWholeWords",
    "use_group_scoring": "useGroupScoring",
    "automation_id": "automationId",
    "role": "role",
    "vectorized": "vectorized",
    "sticky": "sticky",
    "cooldown": "cooldown",
    "delay": "delay",
}
CARD_ENTRY_KEY = "card_entry"  # where an entry keeps the character_book fields world info has no place for


def book_from_character_book(book: dict[str, Any], source: str = "the card", fallback_name: str = "") -> Book:
    entries = book.get("entries")
    if not isinstance(entries, list):
        raise InvalidInput(f"{source}: character_book.entries must be a list, got {type_name(entries)}.")
    if len(entries) > MAX_ENTRIES:
        raise TooLarge(f"{source} has {len(entries)} entries; a lorebook may have at most {MAX_ENTRIES}.")
    out: dict[str, Entry] = {}
    for i, raw in enumerate(entries):
        where = f"{source}: character_book.entries[{i}]"
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where} must be an object, got {type_name(raw)}.")
        entry = _from_card_entry(raw, i, where)
        if str(entry.uid) in out:
            entry = entry.model_copy(update={"uid": max(e.uid for e in out.values()) + 1})
        out[str(entry.uid)] = entry
    settings = {
        "name": book.get("name") or fallback_name or None,
        "description": book.get("description"),
        "scan_depth": book.get("scan_depth"),
        "token_budget": book.get("token_budget"),
        "recursive_scanning": book.get("recursive_scanning"),
    }
    rest = {k: v for k, v in book.items() if k not in ("entries", *settings)}
    try:
        return Book.model_validate({**rest, **settings, "entries": out})
    except ValidationError as exc:
        raise _invalid(exc, f"{source}: character_book") from None


def _from_card_entry(raw: dict[str, Any], index: int, where: str) -> Entry:
    raw_ext = raw.get("extensions")
    ext: dict[str, Any] = raw_ext if isinstance(raw_ext, dict) else {}
    uid = raw.get("id")
    uid = uid if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0 else index
    position = raw.get("position")
    fields: dict[str, Any] = {
        "uid": uid,
        "key": raw.get("keys"),
        "keysecondary": raw.get("secondary_keys"),
        "comment": raw.get("comment") or raw.get("name") or "",
        "content": raw.get("content"),
        "constant": bool(raw.get("constant") or False),
        "selective": bool(raw.get("selective") or False),
        "order": raw.get("insertion_order", 100),
        "position": 0 if position == "before_char" else 1,
        "disable": raw.get("enabled") is False,
        "addMemo": bool(raw.get("comment")),
        "displayIndex": index,
        "caseSensitive": raw.get("case_sensitive"),
    }
    for key, field in _EXT.items():
        if ext.get(key) is not None:
            fields[field] = ext[key]
    # what world info has no field for comes back out on export
    kept = {k: v for k, v in raw.items() if k not in _CARD_MAPPED}
    other_ext = {k: v for k, v in ext.items() if k not in _EXT}
    if other_ext:
        kept["extensions"] = other_ext
    if kept:
        fields[CARD_ENTRY_KEY] = kept
    return _entry(fields, where)


_CARD_MAPPED = {
    "id",
    "keys",
    "secondary_keys",
    "comment",
    "content",
    "constant",
    "selective",
    "insertion_order",
    "position",
    "enabled",
    "case_sensitive",
    "extensions",
}


def book_from_card_png(png: bytes, source: str) -> Book:
    from . import cards

    texts = cards.card_texts(png)
    errors: list[Exception] = []
    for keyword in cards.CARD_KEYWORDS:
        text = texts.get(keyword)
        if text is None:
            continue
        try:
            if not isinstance(text, str):
                raise text
            return book_from_obj(cards._decode_card_text(text, keyword, source), source)
        except (InvalidInput, TooLarge) as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    raise InvalidInput(f"{source} is a PNG without character data, so it has no lorebook. {EXPECTED}")


# --- export -------------------------------------------------------------------------------------------


def to_world_info(book: Book) -> dict[str, Any]:
    """SillyTavern's world-info JSON: every entry field, unknown ones included; our book settings, if
    any, at the top level."""
    out: dict[str, Any] = {"entries": {k: _entry_dict(e) for k, e in book.entries.items()}}
    top = book.model_dump(exclude={"entries"}, exclude_none=True)
    out.update(top)
    return out


def _entry_dict(entry: Entry) -> dict[str, Any]:
    return entry.model_dump(by_alias=True)


def world_info_json(book: Book) -> bytes:
    return json.dumps(to_world_info(book), ensure_ascii=False, indent=2).encode("utf-8")


def to_character_book(book: Book, name: str = "") -> dict[str, Any]:
    """A Character Card V2 `character_book`, as SillyTavern writes one when it exports a card."""
    entries = []
    for entry in book.entries.values():
        data = entry.model_dump()
        kept = data.pop(CARD_ENTRY_KEY, None) or {}
        ext = {key: data.get(field) for key, field in _EXT.items()}
        ext.update((k, v) for k, v in entry.extra_fields().items() if k != CARD_ENTRY_KEY)
        ext.update(kept.pop("extensions", {}) if isinstance(kept.get("extensions"), dict) else {})
        entries.append(
            {
                "id": entry.uid,
                "keys": list(entry.key),
                "secondary_keys": list(entry.keysecondary),
                "comment": entry.comment,
                "content": entry.content,
                "constant": entry.constant,
                "selective": entry.selective,
                "insertion_order": entry.order,
                "enabled": not entry.disable,
                "position": "before_char" if entry.position == 0 else "after_char",
                "case_sensitive": entry.caseSensitive,
                **kept,
                "extensions": ext,
            }
        )
    out: dict[str, Any] = {**(book.__pydantic_extra__ or {}), "name": book.name or name, "entries": entries}
    for key in ("description", "scan_depth", "token_budget", "recursive_scanning"):
        if getattr(book, key) is not None:
            out[key] = getattr(book, key)
    return out


def character_book_of(card: dict[str, Any], name: str, source: str = "the character") -> Book | None:
    """The book embedded in a preset's kept card data (Character.card), or None."""
    data = card.get("data") if isinstance(card, dict) else None
    book = data.get("character_book") if isinstance(data, dict) else None
    if not isinstance(book, dict):
        return None
    return book_from_character_book(book, source, fallback_name=name)
