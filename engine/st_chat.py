"""SillyTavern chat files (JSONL), single and group: import into a session document, export from one.

A SillyTavern chat file holds one JSON object per line. The first is the header when it has no `mes`:
`{"user_name", "character_name", "create_date", "chat_metadata"}` (recent versions write "unused" for
both names; old group chats have no header at all). Every other line is a message:
`{"name", "is_user", "is_system", "send_date", "mes", "swipes", "swipe_id", "swipe_info", "extra"}`.
`is_system` marks a message hidden from the prompt; `swipes` are a reply's versions and `swipe_id` the
one shown; `extra.reasoning` is a thinking model's thought. Chub's variant (`mes`/swipes as
`{"message": ...}`) is read too.

The document is ours (engine/session_formats.py) without `id` and `schema_version`, which the caller
sets: messages with role, content, time, `reasoning`, `greeting`, `alternatives` + `selected` for swipes,
and in a group chat, `name` on each character's message and `characters` (the speakers, in order of
first appearance) at the top. A chat with one character gets `character_name` instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from .cards import APP_KEY
from .errors import InvalidInput, TooLarge
from .session_formats import MAX_IMPORT_BYTES

UNKNOWN_NAMES = ("", "unused")
DEFAULT_USER = "User"
HEADER_KEYS = ("user_name", "character_name", "chat_metadata", "create_date")
_HUMAN = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})@(\d{1,2})h(\d{1,2})m(\d{1,2})s(?:(\d{1,3})ms)?")
_LONG_FORMATS = ("%B %d, %Y %I:%M%p", "%B %d, %Y %I:%M %p", "%b %d, %Y %I:%M%p", "%B %d, %Y %H:%M")


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> str:
    """A SillyTavern date as our ISO time ("" when unknown or unreadable): epoch milliseconds (number
    or digits), ISO-8601, "2024-05-12@14h03m22s" (with optional "123ms") or "May 12, 2024 2:03pm".
    Dates without a zone are taken as UTC."""
    try:
        if isinstance(value, bool) or value is None:
            return ""
        if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdecimal()):
            return _fmt(datetime.fromtimestamp(float(value) / 1000, UTC))
        if not isinstance(value, str) or not value.strip():
            return ""
        text = value.strip()
        if m := _HUMAN.fullmatch(text):
            y, mo, d, h, mi, s, ms = m.groups()
            dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), int(ms or 0) * 1000, UTC)
            return _fmt(dt)
        for fmt in _LONG_FORMATS:
            try:
                return _fmt(datetime.strptime(text, fmt).replace(tzinfo=UTC))
            except ValueError:
                continue
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return _fmt(dt if dt.tzinfo else dt.replace(tzinfo=UTC))
    except (ValueError, OverflowError, OSError):
        return ""


def humanized(iso: str) -> str:
    """Our ISO time as SillyTavern's file-name date, "2024-05-12@14h03m22s123ms" ("" stays "")."""
    if not iso:
        return ""
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    return f"{dt:%Y-%m-%d@%Hh%Mm%Ss}{dt.microsecond // 1000:03d}ms"


# ---- import -----------------------------------------------------------------------------------------


def is_st_jsonl(data: bytes) -> bool:
    """Whether `data` looks like a SillyTavern chat: its first non-blank line is one JSON object that is
    a chat header or a message. (Our session JSON is indented, so its first line is "{" alone.)"""
    first = next((line for line in data[:65536].split(b"\n") if line.strip()), b"")
    try:
        obj = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(obj, dict) or "schema_version" in obj:
        return False
    return "mes" in obj or any(k in obj for k in HEADER_KEYS)


def _lines(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """The file's objects with their line numbers (from 1); blank lines skipped."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput("SillyTavern chat: expected the bytes of a .jsonl file.")
    data = bytes(data)
    if len(data) > MAX_IMPORT_BYTES:
        raise TooLarge(f"The file is {len(data) / 1e6:.1f} MB; chats up to 10 MB can be imported.")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"SillyTavern chat: the file is not UTF-8 text (a bad byte at offset {exc.start})."
        ) from None
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"SillyTavern chat: line {number} is not valid JSON ({exc}).") from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"SillyTavern chat: line {number} must be a JSON object.")
        out.append((number, obj))
    if not out:
        raise InvalidInput("SillyTavern chat: the file is empty.")
    return out


def _text(value: Any, where: str) -> str:
    """A message text: a string, null (empty) or Chub's {"message": text}."""
    if isinstance(value, Mapping) and "message" in value:
        value = value["message"]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"SillyTavern chat: {where} must be text.")
    return value


def _flag(obj: Mapping[str, Any], key: str, number: int) -> bool:
    value = obj.get(key, False)
    if value is None or isinstance(value, bool):
        return bool(value)
    if value in (0, 1):
        return bool(value)
    raise InvalidInput(f"SillyTavern chat: line {number}: '{key}' must be true or false.")


def _known(name: Any) -> str:
    return name.strip() if isinstance(name, str) and name.strip() not in UNKNOWN_NAMES else ""


def parse_st_jsonl(data: bytes) -> dict[str, Any]:
    """Read a SillyTavern chat (single or group) into a session document (see the module's docstring).
    Raises InvalidInput (with the line number) or TooLarge, never anything else."""
    rows = _lines(data)
    header: dict[str, Any] = {}
    if "mes" not in rows[0][1]:
        number, header = rows.pop(0)
        if not any(k in header for k in (*HEADER_KEYS, "name")):
            raise InvalidInput(
                f"SillyTavern chat: line {number} is neither a chat header (user_name, character_name, "
                "chat_metadata) nor a message (it has no 'mes')."
            )
    for number, obj in rows:
        if "mes" not in obj:
            raise InvalidInput(f"SillyTavern chat: line {number} has no 'mes' (the message's text).")
    if not rows:
        raise InvalidInput("SillyTavern chat: the file has a header but no messages.")
    user = _known(header.get("user_name"))
    user = user or next((_known(o.get("name")) for _, o in rows if o.get("is_user")), "") or DEFAULT_USER
    messages = []
    characters: list[str] = []
    for number, obj in rows:
        msg = _message(obj, number)
        if msg["role"] == "assistant":
            speaker = _known(obj.get("name")) or _known(header.get("character_name")) or "Assistant"
            msg["name"] = speaker
            if speaker not in characters:
                characters.append(speaker)
        messages.append(msg)
    for msg in messages:  # the character's opening messages, before the user's first
        if msg["role"] != "assistant":
            break
        msg["greeting"] = True
    doc: dict[str, Any] = {"messages": messages}
    listed = _listed(header)
    if listed or len(characters) > 1:
        doc["characters"] = list(dict.fromkeys([*listed, *characters]))
    else:
        doc["character_name"] = _known(header.get("character_name")) or next(iter(characters), None)
        for msg in messages:
            msg.pop("name", None)
    if user != DEFAULT_USER:
        doc["persona"] = {"name": user, "description": ""}
    created = parse_time(header.get("create_date")) or next((m["time"] for m in messages if m["time"]), "")
    if created:
        doc["created_at"] = created
    first = next((m["content"] for m in messages if m["role"] == "user" and m["content"].strip()), "")
    doc["title"] = _title(first)
    return doc


def _listed(header: Mapping[str, Any]) -> list[str]:
    """The group's members as our export lists them in the header's chat_metadata (SillyTavern keeps a
    group's members in its own group file, not in the chat)."""
    ours = _get(header, "chat_metadata", APP_KEY)
    names = ours.get("characters") if isinstance(ours, Mapping) else None
    return [n for n in map(_known, names) if n] if isinstance(names, list) else []


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _title(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,.;:") + "…"


def _reasoning(extra: Any) -> str:
    value = extra.get("reasoning") if isinstance(extra, Mapping) else None
    return value if isinstance(value, str) else ""


def _message(obj: Mapping[str, Any], number: int) -> dict[str, Any]:
    """One message line as our message dict (role, content, time, reasoning; swipes as alternatives)."""
    where = f"line {number}"
    content = _text(obj["mes"], f"{where}: 'mes'")
    is_user, is_system = _flag(obj, "is_user", number), _flag(obj, "is_system", number)
    extra = obj.get("extra")
    narrator = isinstance(extra, Mapping) and extra.get("type") == "narrator"
    role = "system" if is_system or narrator else "user" if is_user else "assistant"
    msg: dict[str, Any] = {"role": role, "content": content, "time": parse_time(obj.get("send_date"))}
    if role == "assistant":
        msg["reasoning"] = _reasoning(extra)
    swipes = obj.get("swipes")
    if role != "assistant" or not isinstance(swipes, list) or len(swipes) < 2:
        return msg
    texts = [_text(s, f"{where}: swipes[{i}]") for i, s in enumerate(swipes)]
    info = obj.get("swipe_info")
    info = info if isinstance(info, list) else []
    sid = obj.get("swipe_id")
    selected = sid if isinstance(sid, int) and not isinstance(sid, bool) and 0 <= sid < len(texts) else 0
    alternatives = []
    for i, text in enumerate(texts):
        meta = info[i] if i < len(info) and isinstance(info[i], Mapping) else {}
        alt = {"content": text, "time": parse_time(meta.get("send_date"))}
        alt["reasoning"] = _reasoning(meta.get("extra"))
        alternatives.append(alt)
    # the shown message wins over its copy in swipes, as in our own files
    alternatives[selected].update(content=content, time=msg["time"], reasoning=msg["reasoning"])
    msg["alternatives"], msg["selected"] = alternatives, selected
    return msg


# ---- export -----------------------------------------------------------------------------------------


def _user_name(doc: Mapping[str, Any]) -> str:
    persona = doc.get("persona")
    if isinstance(persona, Mapping) and isinstance(persona.get("name"), str) and persona["name"].strip():
        return str(persona["name"])
    if isinstance(persona, str) and persona.strip():
        return persona
    return DEFAULT_USER


def _character_name(doc: Mapping[str, Any]) -> str:
    character = doc.get("character")
    if isinstance(character, Mapping):
        for key in ("title", "name"):
            if isinstance(character.get(key), str) and character[key].strip():
                return str(character[key])
    name = doc.get("character_name")
    return name if isinstance(name, str) and name.strip() else "Assistant"


def to_st_jsonl(doc: Mapping[str, Any]) -> bytes:
    """A session document (its `messages` being the visible path) as a SillyTavern chat file. A group
    chat (a document with `characters`) lists its members in the header's chat_metadata, under our key,
    so that a member who has not spoken yet comes back on import; SillyTavern ignores it. A reply's
    `alternatives` become its swipes."""
    user = _user_name(doc)
    group = bool(doc.get("characters"))
    char = _character_name(doc)
    characters = [str(n) for n in doc.get("characters") or []]
    header = {
        "user_name": user,
        "character_name": "unused" if group else char,
        "create_date": humanized(str(doc.get("created_at") or "")),
        "chat_metadata": {APP_KEY: {"characters": characters}} if group else {},
    }
    lines = [orjson.dumps(header)]
    for msg in doc.get("messages") or []:
        lines.append(orjson.dumps(_st_message(msg, user, char)))
    return b"\n".join(lines)


def _st_message(msg: Mapping[str, Any], user: str, char: str) -> dict[str, Any]:
    role = msg.get("role")
    content = str(msg.get("content") or "")
    time = str(msg.get("time") or "")
    name = msg.get("name") if isinstance(msg.get("name"), str) and msg.get("name") else None
    extra: dict[str, Any] = {}
    if msg.get("reasoning"):
        extra["reasoning"] = msg["reasoning"]
    out: dict[str, Any] = {
        "name": user if role == "user" else "System" if role == "system" else name or char,
        "is_user": role == "user",
        "is_system": role == "system",
        "send_date": time,
        "mes": content,
        "extra": extra,
    }
    if role != "assistant":
        return out
    alternatives = msg.get("alternatives") or []
    selected = msg.get("selected")
    if not isinstance(selected, int) or len(alternatives) < 2 or not 0 <= selected < len(alternatives):
        alternatives, selected = [{"content": content, "time": time, "reasoning": msg.get("reasoning")}], 0
    swipes, info = [], []
    for i, alt in enumerate(alternatives):
        shown = i == selected  # the shown message wins over its copy in alternatives
        text = content if shown else str(alt.get("content") or "")
        when = time if shown else str(alt.get("time") or "")
        thought = msg.get("reasoning") if shown else alt.get("reasoning")
        swipes.append(text)
        info.append({"send_date": when, "extra": {"reasoning": thought} if thought else {}})
    out.update(swipes=swipes, swipe_id=selected, swipe_info=info)
    return out
