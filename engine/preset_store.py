"""PresetStore: the folder of character presets, with card import and export.

A preset is one YAML file, `<name>.yaml`, optionally with an avatar image next to it. Shipped presets are
copied into the user's folder once; after that the user's copy is the only one that is read or written.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import cards
from .character_form import unique_name
from .characters import (
    AVATAR_EXTS,
    MAX_FILE_BYTES,
    NAME_RE,
    NAME_RULE,
    SEEDED_FILE,
    Character,
    character_from_yaml,
    character_to_yaml,
    check_name,
    safe_name,
)
from .errors import InvalidInput, NotFound, StorageError
from .fsutil import atomic_write, move_to


class PresetStore:
    """Presets in `user_dir`, seeded once from `shipped_dir`; deleted ones go to `trash_dir`."""

    def __init__(self, shipped_dir: Path, user_dir: Path, trash_dir: Path) -> None:
        self.shipped_dir = Path(shipped_dir)
        self.user_dir = Path(user_dir)
        self.trash_dir = Path(trash_dir)
        self.problems: list[str] = []  # messages about files list() skipped
        # checks an imported card's sampling before it is saved (the runtime sets it: grammars need the model)
        self.check_params: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.RLock()
        try:
            self.user_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"Cannot create the presets folder {self.user_dir}: {exc.strerror or exc}."
            ) from exc
        self._seed()

    def _seed(self) -> None:
        """Copy each shipped preset once. A name recorded as seeded is never copied again."""
        if not self.shipped_dir.is_dir() or self.shipped_dir.resolve() == self.user_dir.resolve():
            return
        record = self.user_dir / SEEDED_FILE
        try:
            seeded = set(json.loads(record.read_text("utf-8")))
        except (OSError, ValueError, TypeError):
            seeded = set()
        new = sorted(p.stem for p in self.shipped_dir.glob("*.yaml") if NAME_RE.fullmatch(p.stem))
        new = [n for n in new if n not in seeded]
        if not new:
            return
        for name in new:
            for src in self.shipped_dir.glob(f"{name}.*"):
                dst = self.user_dir / src.name
                if src.suffix.lower() in (".yaml", *AVATAR_EXTS) and not dst.exists():
                    atomic_write(dst, src.read_bytes(), keep_backup=False)
        atomic_write(record, json.dumps(sorted(seeded | set(new)), indent=0).encode(), keep_backup=False)

    def _path(self, name: str) -> Path:
        return self.user_dir / f"{check_name(name)}.yaml"

    def is_shipped(self, name: str) -> bool:
        return (
            isinstance(name, str)
            and bool(NAME_RE.fullmatch(name))
            and (self.shipped_dir / f"{name}.yaml").is_file()
        )

    def get(self, name: str) -> Character:
        path = self._path(name)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise InvalidInput(
                    f"{path.name} is larger than {MAX_FILE_BYTES // 2**20} MB; a preset should be small."
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"There is no preset named '{name}'.") from None
        except OSError as exc:
            raise StorageError(f"Cannot read {path.name}: {exc.strerror or exc}.") from exc
        return character_from_yaml(data, name)

    def save(self, character: Character) -> None:
        if self.check_params is not None:
            self.check_params(character.sampling)
        with self._lock:
            atomic_write(self._path(character.name), character_to_yaml(character))

    def delete(self, name: str) -> None:
        """Move the preset, its backup and its own avatar (`<name>.png` etc.) to the trash folder."""
        with self._lock:
            path = self._path(name)
            if not path.is_file():
                raise NotFound(f"There is no preset named '{name}'.")
            move_to(self.trash_dir, path)
            for extra in [
                path.with_name(path.name + ".bak"),
                *(path.with_suffix(ext) for ext in AVATAR_EXTS),
            ]:
                if extra.is_file():  # an avatar shared under another name stays
                    move_to(self.trash_dir, extra)

    def avatar_path(self, name: str) -> Path | None:
        """The preset's avatar image, or None when it has none or the file is missing."""
        avatar = self.get(name).avatar
        path = self.user_dir / avatar if avatar else None  # avatar is validated: a bare file name
        return path if path is not None and path.is_file() else None

    def import_bytes(self, filename: str, data: bytes) -> Character:
        """Import a card or preset file as a new preset with a fresh name; never overwrites anything."""

        imported = cards.parse_card(data, filename)
        if self.check_params is not None:
            self.check_params(imported.character.sampling)
        with self._lock:
            name = self._unique_name(imported.character.name)
            avatar = f"{name}.png" if imported.avatar_png else None
            character = imported.character.model_copy(update={"name": name, "avatar": avatar})
            body = character_to_yaml(character)
            if imported.avatar_png and avatar:
                atomic_write(self.user_dir / avatar, imported.avatar_png, keep_backup=False)
            try:
                atomic_write(self._path(name), body, keep_backup=False)
            except BaseException:
                if avatar:
                    (self.user_dir / avatar).unlink(missing_ok=True)
                raise
        return character

    def unique_name(self, base: str) -> str:
        """`base` made a valid preset name, with -2, -3 ... added until no preset (any case) has it."""
        return unique_name([c.name for c in self.list()], base)

    def _unique_name(self, base: str) -> str:
        base = safe_name(base)[:56]
        taken = {p.name.split(".", 1)[0].lower() for p in self.user_dir.iterdir()}
        name, n = base, 2
        while name.lower() in taken:
            name, n = f"{base}-{n}", n + 1
        return name

    def export_card_json(self, name: str) -> bytes:

        return cards.card_json(self.get(name))

    def export_card_png(self, name: str) -> bytes:

        character = self.get(name)
        avatar = self.avatar_path(name)
        image = avatar.read_bytes() if avatar is not None else None
        return cards.card_png(character, image)

    def list(self) -> list[Character]:
        """All presets, sorted by name. A file that fails to load is skipped and reported in `problems`."""
        found: list[Character] = []
        problems: list[str] = []
        for path in sorted(self.user_dir.glob("*.yaml"), key=lambda p: p.name.lower()):
            if not NAME_RE.fullmatch(path.stem):
                problems.append(f"Skipped {path.name}: the file name must be {NAME_RULE}, plus .yaml.")
                continue
            try:
                found.append(self.get(path.stem))
            except (InvalidInput, NotFound, StorageError) as exc:
                problems.append(f"Skipped {path.name}: {exc.message}")
        self.problems = problems
        return found
