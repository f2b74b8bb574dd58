"""User personas: who {{user}} is. One JSON file, <data_dir>/personas/personas.json, written atomically.

A persona is a name (what {{user}} becomes), a description the character knows, and an optional avatar
image stored next to the file. One persona can be the default for new chats; a chat may pick another.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidInput, NotFound, StorageError
from .fsutil import atomic_write, move_to

MAX_PERSONAS = 1000
MAX_DESCRIPTION = 20_000
AVATAR_TYPES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif"}
MAX_AVATAR_BYTES = 5 * 1024 * 1024


def check_persona_name(name: Any) -> str:
    """Any text of 1-100 characters without control characters, not blank, no edge spaces."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > 100
        or name != name.strip()
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise InvalidInput(
            f"{repr(name)[:80]} is not a valid persona name: use 1-100 characters, no control characters "
            "and no spaces at either end.",
            field="name",
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("The persona name contains invalid Unicode.", field="name") from None
    return name


class Persona(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(description="What {{user}} becomes.")
    description: str = Field("", max_length=MAX_DESCRIPTION, description="What the character knows of you.")
    avatar: str | None = Field(None, description="File name of the avatar image in the personas folder.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return check_persona_name(v)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @field_validator("description")
    @classmethod
    def _text(cls, v: str) -> str:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains invalid Unicode") from None
        return v

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, v: str | None) -> str | None:
        if v and (
            Path(v).name != v or not v.startswith("avatar-") or Path(v).suffix not in (".png", ".jpg", ".gif")
        ):
            raise ValueError("must be the file name of an avatar stored with the personas")
        return v or None

    @classmethod
    def from_dict(cls, data: Any, source: str = "persona") -> Persona:
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: expected an object with 'name' and 'description'.")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ())) or "persona"
            if err.get("type") == "extra_forbidden":
                raise InvalidInput(
                    f"{source}: unknown field '{loc}'. Known: name, description, avatar.", field=loc
                ) from None
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            raise InvalidInput(f"{source}: invalid '{loc}': {msg}.", field=loc) from None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str | None = None
    personas: list[Persona] = Field(default_factory=list)


class PersonaStore:
    """All personas in one file; a file that cannot be read is set aside (never overwritten)."""

    check_name = staticmethod(check_persona_name)  # raises InvalidInput naming the rule; returns the name
    max_avatar_bytes = MAX_AVATAR_BYTES  # the largest avatar image accepted

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / "personas"
        self.path = self.folder / "personas.json"
        self.problems: list[str] = []
        self._lock = threading.RLock()

    def _read(self) -> _File:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _File()
        except OSError as exc:
            raise StorageError(f"Cannot read {self.path.name}: {exc.strerror or exc}.") from exc
        try:
            return _File.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            kept = move_to(self.folder / "corrupt", self.path)
            self.problems.append(
                f"{self.path.name} could not be read ({str(exc)[:120]}); it was moved to {kept}."
            )
            return _File()

    def _write(self, data: _File) -> None:
        atomic_write(self.path, orjson.dumps(data.model_dump(), option=orjson.OPT_INDENT_2))

    def list(self) -> list[Persona]:
        with self._lock:
            return self._read().personas

    def default_name(self) -> str | None:
        with self._lock:
            data = self._read()
            names = [p.name for p in data.personas]
            return data.default if data.default in names else None

    def get(self, name: str) -> Persona:
        check_persona_name(name)
        with self._lock:
            found = next((p for p in self._read().personas if p.name == name), None)
        if found is None:
            raise NotFound(f"There is no persona named {name!r}.")
        return found

    def find(self, name: str | None) -> Persona | None:
        try:
            return self.get(name) if name else None
        except (NotFound, InvalidInput):
            return None

    def save(self, persona: Persona, *, make_default: bool | None = None) -> Persona:
        """Create or replace the persona of that name. `make_default` True/False sets/clears the default."""
        with self._lock:
            data = self._read()
            others = [p for p in data.personas if p.name != persona.name]
            if len(others) >= MAX_PERSONAS:
                raise InvalidInput(f"There are already {MAX_PERSONAS} personas; delete some first.")
            at = next((i for i, p in enumerate(data.personas) if p.name == persona.name), len(data.personas))
            data.personas = others[:at] + [persona] + others[at:]
            if make_default is True or (make_default is None and len(data.personas) == 1):
                data.default = persona.name
            elif make_default is False and data.default == persona.name:
                data.default = None
            self._write(data)
            return persona

    def put(
        self, name: str, description: str = "", avatar: str | None = None, *, make_default: bool | None = None
    ) -> Persona:
        """Create or replace persona `name`. `avatar` is a file name `store_avatar` returned."""
        persona = Persona.from_dict({"name": name, "description": description, "avatar": avatar})
        if persona.avatar and self.avatar_path(persona) is None:
            raise InvalidInput(f"There is no stored avatar {persona.avatar!r}.", field="avatar")
        return self.save(persona, make_default=make_default)

    def delete(self, name: str) -> None:
        with self._lock:
            data = self._read()
            persona = next((p for p in data.personas if p.name == check_persona_name(name)), None)
            if persona is None:
                raise NotFound(f"There is no persona named {name!r}.")
            data.personas = [p for p in data.personas if p.name != name]
            if data.default == name:
                data.default = None
            self._write(data)
            if persona.avatar and not any(p.avatar == persona.avatar for p in data.personas):
                avatar = self.folder / persona.avatar
                if avatar.is_file():
                    move_to(self.folder.parent / "trash" / "personas", avatar)

    def store_avatar(self, image: bytes) -> str:
        """Keep an image (PNG, JPEG or GIF); returns its file name for Persona.avatar."""
        if len(image) > MAX_AVATAR_BYTES:
            raise InvalidInput("The avatar image is over 5 MB.")
        ext = next((e for magic, e in AVATAR_TYPES.items() if image.startswith(magic)), None)
        if ext is None:
            raise InvalidInput("The avatar must be a PNG, JPEG or GIF image.")
        name = f"avatar-{hashlib.sha256(image).hexdigest()[:16]}{ext}"
        path = self.folder / name
        if not path.exists():
            atomic_write(path, image, keep_backup=False)
        return name

    def set_avatar(self, name: str, image: bytes) -> Persona:
        """Give persona `name` the avatar `image` (PNG, JPEG or GIF); the image it had goes to the trash
        unless another persona uses it. The default persona stays as it is."""
        with self._lock:
            old = self.get(name)
            stored = self.store_avatar(image)
            data = self._read()
            persona = old.model_copy(update={"avatar": stored})
            data.personas = [persona if p.name == name else p for p in data.personas]
            self._write(data)
            if old.avatar and old.avatar != stored and not any(p.avatar == old.avatar for p in data.personas):
                previous = self.folder / old.avatar
                if previous.is_file():
                    move_to(self.folder.parent / "trash" / "personas", previous)
            return persona

    def avatar_path(self, persona: Persona) -> Path | None:
        path = self.folder / persona.avatar if persona.avatar else None
        return path if path is not None and path.is_file() else None
