"""Character card codecs: bytes in, Character out, and back. No files, no state.

Reads PNG cards (base64 JSON in a `ccv3` or `chara` tEXt/zTXt/iTXt chunk, `ccv3` preferred), Character
Card V1/V2/V3 JSON, old TavernAI/Pygmalion JSON, text-generation-webui YAML and our own preset YAML.
Writes V2 JSON, V3 JSON and PNG with both chunks. Whatever a card holds that Character has no field for
goes to `Character.card` ({"top": ..., "data": ...}) and comes back out on export untouched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .characters import Character, check_json_value, load_yaml, safe_name, type_name
from .errors import InvalidInput, TooLarge

MAX_BYTES = 10 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
APP_KEY = "local_llm_chat"  # our entry in data.extensions: {"sampling": {...}}
SPECS = {"chara_card_v2": "2.0", "chara_card_v3": "3.0"}

# Card field -> Character field, per format. Lists are the fields holding lists of strings.
CARD_FIELDS = {
    "name": "title",
    "description": "description",
    "personality": "personality",
    "scenario": "scenario",
    "first_mes": "greeting",
    "mes_example": "example_dialogue",
    "creator_notes": "creator_notes",
    "system_prompt": "system_prompt",
    "post_history_instructions": "post_history_instructions",
    "alternate_greetings": "alternate_greetings",
    "tags": "tags",
}
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
TAVERN_FIELDS = {
    "char_name": "title",
    "char_persona": "description",
    "world_scenario": "scenario",
    "char_greeting": "greeting",
    "example_dialogue": "example_dialogue",
}
TGW_FIELDS = {
    "name": "title",
    "context": "description",
    "greeting": "greeting",
    "example_dialogue": "example_dialogue",
}
LIST_FIELDS = ("alternate_greetings", "tags")
DATA_DEFAULTS: dict[str, Any] = {
    "creator": "",
    "character_version": "",
    "extensions": {},
    "group_only_greetings": [],
}
EXPECTED = (
    "Expected a character card (PNG, or JSON with spec chara_card_v2/chara_card_v3, or V1 JSON with "
    "name/first_mes), TavernAI/Pygmalion JSON (char_name, char_persona, ...), a text-generation-webui "
    "YAML (name, context, greeting) or a preset YAML."
)


@dataclass(frozen=True)
class ImportedCard:
    character: Character
    avatar_png: bytes | None  # the PNG card's image, without its card chunks
    source: str  # what it was read as, e.g. "PNG (ccv3) chara_card_v3"


# --- import -------------------------------------------------------------------------------------------


def parse_card(data: bytes, filename: str = "") -> ImportedCard:
    """Read any supported character file. Raises InvalidInput (what is wrong, what was expected), TooLarge."""
    shown = _display_name(filename)
    if len(data) > MAX_BYTES:
        raise TooLarge(f"{shown} is {len(data) / 2**20:.1f} MB; character files may be at most 10 MB.")
    fallback = safe_name(PurePosixPath(filename.replace("\\", "/")).stem)
    if data.startswith(PNG_SIGNATURE):
        return _parse_png(data, shown, fallback)
    _reject_other_images(data, shown)
    obj = _parse_text(data, shown)
    character, kind = character_from_obj(obj, shown, fallback)
    return ImportedCard(character, None, kind)


def character_from_obj(
    obj: Any, source: str = "the card", fallback_name: str = "character"
) -> tuple[Character, str]:
    """Map a parsed card (any supported format) to a Character; also return the format's name."""
    if not isinstance(obj, dict):
        raise InvalidInput(
            f"{source}: expected an object with character fields, got {type_name(obj)}. {EXPECTED}"
        )
    try:
        check_json_value(obj)
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc.message}.") from None
    data = obj.get("data")
    if "spec" in obj or (isinstance(data, dict) and "first_mes" in data):
        spec = obj.get("spec") or "chara_card_v2"
        if not isinstance(spec, str) or spec not in SPECS:
            raise InvalidInput(
                f"{source}: unsupported card spec {str(spec)[:40]!r}. "
                "Expected chara_card_v2 or chara_card_v3."
            )
        return _from_spec(obj, spec, source, fallback_name), spec
    if "char_name" in obj:
        return _from_flat(obj, TAVERN_FIELDS, source, fallback_name), "TavernAI/Pygmalion JSON"
    if "first_mes" in obj or "mes_example" in obj:
        return _from_flat(obj, CARD_FIELDS, source, fallback_name), "chara_card_v1"
    if "context" in obj:
        return _from_flat(obj, TGW_FIELDS, source, fallback_name), "text-generation-webui YAML"
    if set(obj) & set(Character.model_fields):
        return _from_preset(obj, source, fallback_name), "preset"
    keys = ", ".join(list(map(str, obj))[:10]) or "none"
    raise InvalidInput(f"{source}: not a recognised character format (its fields: {keys}). {EXPECTED}")


def _from_spec(obj: dict[str, Any], spec: str, source: str, fallback: str) -> Character:
    data = obj.get("data")
    if not isinstance(data, dict):
        raise InvalidInput(
            f"{source}: a {spec} card needs a 'data' object holding the character, got {type_name(data)}."
        )
    fields = _map(data, CARD_FIELDS, source, "data.")
    rest = {k: v for k, v in data.items() if k not in CARD_FIELDS}
    ext = rest.get("extensions")
    if isinstance(ext, dict) and APP_KEY in ext:  # our own export: sampling overrides
        ours = ext[APP_KEY]
        rest["extensions"] = {k: v for k, v in ext.items() if k != APP_KEY}
        if isinstance(ours, dict) and ours.get("sampling"):
            fields["sampling"] = ours["sampling"]
    for key, default in DATA_DEFAULTS.items():  # export writes these defaults back
        if key in rest and rest[key] in (default, None):
            del rest[key]
    top = {k: v for k, v in obj.items() if k not in ("spec", "spec_version", "data", *V1_FIELDS)}
    return _build(fields, {"top": top, "data": rest}, source, fallback)


def _from_flat(obj: dict[str, Any], mapping: dict[str, str], source: str, fallback: str) -> Character:
    fields = _map(obj, mapping, source, "")
    top = {k: v for k, v in obj.items() if k not in mapping}
    return _build(fields, {"top": top}, source, fallback)


def _from_preset(obj: dict[str, Any], source: str, fallback: str) -> Character:
    title = obj.get("title") or obj.get("name")
    title = title if isinstance(title, str) else ""
    fields = {**obj, "title": title, "name": safe_name(title, fallback), "avatar": None}
    return Character.from_dict(fields, source=source)


def _build(fields: dict[str, Any], card: dict[str, Any], source: str, fallback: str) -> Character:
    title = fields.get("title", "").strip()
    if not title:
        raise InvalidInput(f"{source}: the card has no character name. Expected a non-empty 'name' field.")
    card = {k: v for k, v in card.items() if v}
    return Character.from_dict({**fields, "name": safe_name(title, fallback), "card": card}, source=source)


def _map(src: dict[str, Any], mapping: dict[str, str], source: str, prefix: str) -> dict[str, Any]:
    """Copy mapped fields, tolerating null and missing ones; a wrong type is an error naming the field."""
    out: dict[str, Any] = {}
    for key, field in mapping.items():
        if key not in src or src[key] is None:
            continue
        value, where = src[key], f"'{prefix}{key}'"
        if field in LIST_FIELDS:
            if isinstance(value, str):
                value = [s.strip() for s in value.split(",")] if field == "tags" else [value]
            if not isinstance(value, list):
                raise InvalidInput(
                    f"{source}: {where} should be a list of text, but it is {type_name(value)}."
                )
            out[field] = [_text(v, where, source) for v in value if v is not None and v != ""]
        else:
            out[field] = _text(value, where, source)
    return out


def _text(value: Any, where: str, source: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(f"{source}: {where} should be text, but it is {type_name(value)}.")


# --- text files ---------------------------------------------------------------------------------------


def _parse_text(data: bytes, source: str) -> Any:
    encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise InvalidInput(f"{source} is neither a PNG image nor UTF-8 text. {EXPECTED}") from None
    if not text.strip():
        raise InvalidInput(f"{source} is empty. {EXPECTED}")
    if text.lstrip().startswith(("{", "[")):
        return parse_json(text, source)
    return load_yaml(text, source)


def parse_json(text: str, source: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a valid JSON value")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{source}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    except RecursionError:
        raise InvalidInput(f"{source}: the JSON is nested too deeply.") from None
    except ValueError as exc:
        raise InvalidInput(f"{source}: not valid JSON: {exc}.") from None


def _reject_other_images(data: bytes, source: str) -> None:
    kinds = {b"\xff\xd8\xff": "a JPEG", b"GIF8": "a GIF", b"BM": "a BMP"}
    kind = next((k for magic, k in kinds.items() if data.startswith(magic)), None)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        kind = "a WebP"
    if kind:
        raise InvalidInput(
            f"{source} is {kind} image. Character cards are PNG files with a 'chara' or 'ccv3' text chunk, "
            "or JSON/YAML files."
        )


def _display_name(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name
    name = re.sub(r"[\x00-\x1f\x7f]", "?", name)[:100]
    return f"'{name}'" if name else "The file"


# --- PNG ----------------------------------------------------------------------------------------------


def iter_chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) for each chunk up to IEND. CRCs are not checked: cards in the wild get them wrong."""
    if not png.startswith(PNG_SIGNATURE):
        raise InvalidInput("Not a PNG file (the PNG signature is missing).")
    pos = 8
    while pos < len(png):
        if pos + 12 > len(png):
            raise InvalidInput("The PNG file is truncated: a chunk is cut off.")
        length, ctype = struct.unpack_from(">I4s", png, pos)
        end = pos + 12 + length
        if end > len(png):
            raise InvalidInput("The PNG file is truncated: a chunk is cut off.")
        yield ctype, png[pos + 8 : pos + 8 + length]
        pos = end
        if ctype == b"IEND":
            return


def make_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def text_chunk(keyword: str, text: str) -> bytes:
    return make_chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1"))


def card_texts(png: bytes) -> dict[str, str | InvalidInput | TooLarge]:
    """The first `chara` and `ccv3` text chunks, wherever they are; an unreadable one maps to its error."""
    found: dict[str, str | InvalidInput | TooLarge] = {}
    try:
        for ctype, body in iter_chunks(png):
            if ctype not in TEXT_CHUNKS:
                continue
            key, _, rest = body.partition(b"\0")
            keyword = key.decode("latin-1").strip().lower()
            if keyword in CARD_KEYWORDS and keyword not in found:
                try:
                    found[keyword] = _chunk_text(ctype, rest, keyword)
                except (InvalidInput, TooLarge) as exc:
                    found[keyword] = exc
    except InvalidInput:
        if not found:
            raise
    return found


def _parse_png(png: bytes, source: str, fallback: str) -> ImportedCard:
    try:
        texts = card_texts(png)
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc.message}") from None
    errors: list[InvalidInput | TooLarge] = []
    for keyword in CARD_KEYWORDS:  # ccv3 first; fall back to chara when ccv3 is unreadable
        text = texts.get(keyword)
        if text is None:
            continue
        try:
            if not isinstance(text, str):
                raise text
            obj = _decode_card_text(text, keyword, source)
            character, kind = character_from_obj(obj, source, fallback)
        except (InvalidInput, TooLarge) as exc:
            errors.append(exc)
            continue
        try:
            avatar: bytes | None = strip_card_chunks(png)
        except InvalidInput:
            avatar = None  # a truncated image is not worth keeping
        return ImportedCard(character, avatar, f"PNG ({keyword}) {kind}")
    if errors:
        raise errors[0]
    raise InvalidInput(
        f"{source} is a PNG image without character data: it has no 'chara' or 'ccv3' text chunk. "
        "Expected a character card PNG, as exported by SillyTavern, chub.ai or this app."
    )


def _chunk_text(ctype: bytes, rest: bytes, keyword: str) -> str:
    try:
        if ctype == b"tEXt":
            return rest.decode("latin-1")
        if ctype == b"zTXt":
            if rest[:1] != b"\0":
                raise InvalidInput(f"The PNG's '{keyword}' zTXt chunk uses an unknown compression method.")
            return _inflate(rest[1:], keyword).decode("latin-1")
        compressed, method = rest[:1] == b"\x01", rest[1:2]
        if len(rest) < 2 or (compressed and method != b"\0"):
            raise InvalidInput(
                f"The PNG's '{keyword}' iTXt chunk is malformed or uses an unknown compression."
            )
        _lang, _, rest = rest[2:].partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        return (_inflate(text, keyword) if compressed else text).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"The PNG's '{keyword}' iTXt chunk is not valid UTF-8.") from None


def _inflate(data: bytes, keyword: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_BYTES)
    except zlib.error:
        raise InvalidInput(f"The PNG's compressed '{keyword}' chunk is corrupt.") from None
    if inflater.unconsumed_tail:
        raise TooLarge(f"The PNG's '{keyword}' chunk decompresses to more than 10 MB.")
    return out


def _decode_card_text(text: str, keyword: str, source: str) -> Any:
    text = text.strip()
    if not text.startswith("{"):  # normally base64; some tools store the JSON itself
        compact = "".join(text.split())
        try:
            raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
            text = raw.decode("utf-8-sig")
        except (binascii.Error, ValueError):
            raise InvalidInput(
                f"{source}: the '{keyword}' chunk is not base64-encoded UTF-8 JSON, which a card should hold."
            ) from None
    return parse_json(text, f"{source} ('{keyword}' chunk)")


def strip_card_chunks(png: bytes) -> bytes:
    """The image without its `chara`/`ccv3` chunks (and anything after IEND)."""
    out = [PNG_SIGNATURE]
    for ctype, body in iter_chunks(png):
        if (
            ctype in TEXT_CHUNKS
            and body.partition(b"\0")[0].decode("latin-1").strip().lower() in CARD_KEYWORDS
        ):
            continue
        out.append(make_chunk(ctype, body))
    return b"".join(out)


def add_text_chunks(png: bytes, texts: dict[str, str]) -> bytes:
    """Insert tEXt chunks just before IEND (adding IEND if the file lacks it)."""
    chunks = [(t, b) for t, b in iter_chunks(png) if t != b"IEND"]
    new = [text_chunk(k, v) for k, v in texts.items()]
    return b"".join([PNG_SIGNATURE, *(make_chunk(t, b) for t, b in chunks), *new, make_chunk(b"IEND", b"")])


# --- export -------------------------------------------------------------------------------------------


def _card_data(c: Character) -> dict[str, Any]:
    rest = dict(c.card.get("data", {}))
    ext = rest.pop("extensions", {})
    if c.sampling and isinstance(ext, dict):
        ext = {**ext, APP_KEY: {"sampling": c.sampling}}
    return {
        "name": c.display_name,
        "description": c.description,
        "personality": c.personality,
        "scenario": c.scenario,
        "first_mes": c.greeting,
        "mes_example": c.example_dialogue,
        "creator_notes": c.creator_notes,
        "system_prompt": c.system_prompt,
        "post_history_instructions": c.post_history_instructions,
        "alternate_greetings": list(c.alternate_greetings),
        "tags": list(c.tags),
        "creator": rest.pop("creator", ""),
        "character_version": rest.pop("character_version", ""),
        "extensions": ext,
        **rest,
    }


def to_v2(c: Character) -> dict[str, Any]:
    """A chara_card_v2 object, with the V1 fields repeated at the top for V1-only readers."""
    data = _card_data(c)
    v1 = {k: data[k] for k in V1_FIELDS}
    return {**c.card.get("top", {}), **v1, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def to_v3(c: Character) -> dict[str, Any]:
    data = _card_data(c)
    data.setdefault("group_only_greetings", [])
    return {**c.card.get("top", {}), "spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def card_json(c: Character) -> bytes:
    return json.dumps(to_v2(c), ensure_ascii=False, indent=2).encode("utf-8")


def _b64_json(obj: dict[str, Any]) -> str:
    raw = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def card_png(c: Character, image: bytes | None = None) -> bytes:
    """A PNG card: `image` (any format Pillow reads) or a placeholder, with `chara` (V2) and `ccv3` (V3)."""
    png = None
    if image is not None:
        try:
            png = strip_card_chunks(image) if image.startswith(PNG_SIGNATURE) else _convert_to_png(image)
        except InvalidInput:
            png = _convert_to_png(image)
    png = png or placeholder_png(c.display_name)
    return add_text_chunks(png, {"chara": _b64_json(to_v2(c)), "ccv3": _b64_json(to_v3(c))})


def _convert_to_png(image: bytes) -> bytes | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as img:
            buf = io.BytesIO()
            img.convert("RGBA").save(buf, "PNG")
            return buf.getvalue()
    except Exception:  # any unreadable image gets the placeholder
        return None


def placeholder_png(title: str, size: tuple[int, int] = (400, 600)) -> bytes:
    """A plain card image: a colour from the name, and its initial when that is a Latin letter or digit."""
    from PIL import Image, ImageDraw, ImageFont

    digest = hashlib.sha256(title.encode("utf-8", "replace")).digest()
    img = Image.new("RGB", size, (60 + digest[0] % 120, 60 + digest[1] % 120, 60 + digest[2] % 120))
    initial = title[:1].upper()
    if initial.isascii() and initial.isalnum():
        try:
            font = ImageFont.load_default(size=size[0] // 2)
            ImageDraw.Draw(img).text(
                (size[0] / 2, size[1] / 2), initial, fill="white", font=font, anchor="mm"
            )
        except (OSError, ValueError, TypeError):
            pass  # no scalable default font in this Pillow build: the plain colour will do
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
