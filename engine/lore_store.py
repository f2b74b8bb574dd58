"""LorebookStore: one SillyTavern world-info JSON per book under <data_dir>/lorebooks, written atomically.

The file stem is the book's name. Names may hold any printable text except path characters, so they can
never leave the folder. Deleted books go to <data_dir>/trash/lorebooks.
"""

from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath

from .errors import InvalidInput, NotFound, StorageError, TooLarge
from .fsutil import atomic_write, move_to
from .lore_form import FORM_FIELDS, LOGIC_CHOICES, POSITION_CHOICES, ROLE_CHOICES, entry_from_form, new_entry
from .lore_form import form_from_entry as entry_form
from .lorebook import MAX_BYTES, Book, Entry, book_from_obj, parse_book, world_info_json

FORBIDDEN = set('/\\:*?"<>|')
NAME_RULE = "1-100 characters, none of / \\ : * ? \" < > | or control characters, not starting with '.'"


def check_book_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > 100
        or name != name.strip()
        or name.startswith(".")
        or any(c in FORBIDDEN or ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise InvalidInput(f"{repr(name)[:80]} is not a valid lorebook name: use {NAME_RULE}.", field="name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("The lorebook name contains invalid Unicode.", field="name") from None
    return name


def name_from(text: str, fallback: str = "lorebook") -> str:
    """A valid book name made from a file name or a title."""
    cleaned = "".join("_" if c in FORBIDDEN or ord(c) < 32 or ord(c) == 127 else c for c in text)
    cleaned = cleaned.strip().lstrip(".").strip()[:90].strip()
    return cleaned or fallback


class LorebookStore:
    check_name = staticmethod(check_book_name)  # raises InvalidInput naming the rule; returns the name
    max_bytes = MAX_BYTES  # the largest book file read or imported
    # Editors (the Lorebooks tab): an entry as form fields (engine/lore_form.py), in this order.
    form_fields = FORM_FIELDS
    form_choices = {"selectiveLogic": LOGIC_CHOICES, "position": POSITION_CHOICES, "role": ROLE_CHOICES}
    entry_form = staticmethod(entry_form)  # an entry as form values

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / "lorebooks"
        self.trash = Path(data_dir) / "trash" / "lorebooks"
        self.problems: list[str] = []
        self._lock = threading.RLock()

    def _path(self, name: str) -> Path:
        return self.folder / f"{check_book_name(name)}.json"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(
            (p.stem for p in self.folder.glob("*.json") if not p.name.startswith(".")), key=str.lower
        )

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def get(self, name: str) -> Book:
        path = self._path(name)
        try:
            if path.stat().st_size > MAX_BYTES:
                raise TooLarge(f"{path.name} is larger than 10 MB.")
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"There is no lorebook named {name!r}.") from None
        except OSError as exc:
            raise StorageError(f"Cannot read {path.name}: {exc.strerror or exc}.") from exc
        return parse_book(data, path.name)

    def export_bytes(self, name: str) -> bytes:
        return world_info_json(self.get(name))

    def list(self) -> list[tuple[str, Book]]:
        """Every readable book; unreadable files are reported in `problems`, never changed."""
        found, problems = [], []
        for name in self.names():
            try:
                found.append((name, self.get(name)))
            except (InvalidInput, TooLarge, StorageError) as exc:
                problems.append(f"Skipped lorebook {name!r}: {exc.message}")
        self.problems = problems
        return found

    def save(self, name: str, book: Book) -> None:
        with self._lock:
            atomic_write(self._path(name), world_info_json(book))

    def put(self, name: str, obj: object, source: str = "request body") -> Book:
        """Create or replace book `name` from world-info JSON (parsed), or a character book."""
        book = book_from_obj(obj, source)
        self.save(name, book)
        return book

    def create(self, name: str) -> str:
        """An empty book named `name`, unless that book exists; returns the name."""
        with self._lock:
            if not self.exists(check_book_name(name)):
                self.save(name, Book())
        return name

    def add_entry(self, name: str) -> Entry:
        """A new, empty entry at the end of book `name`."""
        with self._lock:
            book = self.get(name)
            entry = new_entry(book)
            book.entries[str(entry.uid)] = entry
            self.save(name, book)
        return entry

    def save_entry(self, name: str, key: str, values: dict[str, object]) -> Entry:
        """Entry `key` of book `name` with the form's `values` (FORM_FIELDS); KeyError if it is gone."""
        with self._lock:
            book = self.get(name)
            entry = entry_from_form(values, book.entries[key])
            book.entries[key] = entry
            self.save(name, book)
        return entry

    def delete_entry(self, name: str, key: str) -> None:
        with self._lock:
            book = self.get(name)
            book.entries.pop(key, None)
            self.save(name, book)

    def delete(self, name: str) -> None:
        with self._lock:
            path = self._path(name)
            if not path.is_file():
                raise NotFound(f"There is no lorebook named {name!r}.")
            move_to(self.trash, path)
            backup = path.with_name(path.name + ".bak")
            if backup.is_file():
                move_to(self.trash, backup)

    def import_bytes(self, filename: str, data: bytes, name: str | None = None) -> tuple[str, Book]:
        """Import a world-info JSON or a card's book under a new name; never overwrites a book."""
        shown = PurePosixPath(filename.replace("\\", "/")).name or "the file"
        book = parse_book(data, repr(shown))
        base = name_from(name or book.name or PurePosixPath(shown).stem)
        with self._lock:
            unique, n = base, 2
            taken = {p.lower() for p in self.names()}
            while unique.lower() in taken:
                unique, n = f"{base} ({n})", n + 1
            atomic_write(self._path(unique), world_info_json(book), keep_backup=False)
        return unique, book
