"""SessionStore: one JSON file per chat under <data_dir>/sessions, written atomically with a .bak.

Ids are checked against a strict pattern before any path is built, so no id can reach outside the folder.
Files that fail to parse are moved to <data_dir>/corrupt and reported in `store.problems`.
"""

from __future__ import annotations

import builtins
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from .characters import safe_name
from .errors import EngineError, InvalidInput, NotFound, StorageError
from .fsutil import atomic_write, move_to
from .session_formats import (
    SCHEMA_VERSION,
    Alternative,
    ChatMessage,
    ModelInfo,
    NewerVersion,
    Session,
    SessionSummary,
    auto_title,
    encode,
    invalid_session,
    is_session_id,
    new_session_id,
    now_iso,
    parse_import,
    session_from_doc,
    to_markdown,
    to_openai_messages,
)
from .st_chat import is_st_jsonl, parse_st_jsonl, to_st_jsonl
from .text import clean_line

__all__ = [
    "SCHEMA_VERSION",
    "Alternative",
    "ChatMessage",
    "ModelInfo",
    "Session",
    "SessionStore",
    "SessionSummary",
    "ShrinkRefused",
    "to_markdown",
]

TITLE_MAX = 200


class ShrinkRefused(InvalidInput):
    """A save would replace a longer stored history with a shorter one."""

    kind = "conflict"
    status = 409


class _Seen:
    """The revision (and title) at which each live Session object was last read or written."""

    def __init__(self) -> None:
        self._map: dict[int, tuple[weakref.ref[Session], int, str]] = {}

    def set(self, session: Session, revision: int, title: str) -> None:
        key = id(session)

        def gone(_: object) -> None:
            self._map.pop(key, None)

        self._map[key] = (weakref.ref(session, gone), revision, title)

    def get(self, session: Session) -> tuple[int, str] | None:
        hit = self._map.get(id(session))
        if hit is None or hit[0]() is not session:
            return None
        return hit[1], hit[2]


class SessionStore:
    """Sessions on disk. Each save bumps the session's revision (kept in memory); a save from an object
    read at an older revision keeps a title that was changed in between (a rename during a reply), and
    `turn_lock` + `refresh` let two turns on one session run one after the other, each on the latest."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.folder = self.data_dir / "sessions"
        self.problems: list[str] = []  # user-facing warnings; the UI shows and clears them
        self._lock = threading.RLock()
        # id -> ((mtime_ns, size), summary, lower-cased search text); avoids re-reading unchanged files
        self._cache: dict[str, tuple[tuple[int, int], SessionSummary, str]] = {}
        self._deleted: set[str] = set()
        self._ignored: set[str] = set()
        self._revisions: dict[str, int] = {}
        self._seen = _Seen()
        self._turn_locks: dict[str, threading.Lock] = {}
        # checks an imported chat's sampling before it is saved (the runtime sets it: grammars need the model)
        self.check_params: Callable[[dict[str, Any]], None] | None = None

    # ---- reading ------------------------------------------------------------------------------------

    def get(self, session_id: str) -> Session:
        with self._lock:
            session = self._load(self._path(session_id))[0]
            self._seen.set(session, self._revisions.get(session_id, 0), session.title)
            return session

    def refresh(self, session: Session) -> bool:
        """Bring `session` up to date, in place, if it was saved by someone else since it was read."""
        with self._lock:
            seen = self._seen.get(session)
            current = self._revisions.get(session.id, 0)
            if seen is None or seen[0] >= current:
                return False
            fresh = self._load(self._path(session.id))[0]
            for name in type(session).model_fields:
                setattr(session, name, getattr(fresh, name))
            self._seen.set(session, current, session.title)
            return True

    def turn_lock(self, session_id: str) -> threading.Lock:
        """Held while a turn runs on the session, so that a second turn waits for the first."""
        with self._lock:
            return self._turn_locks.setdefault(session_id, threading.Lock())

    def export_bytes(self, session_id: str) -> bytes:
        """Exactly the stored file, checked to be readable."""
        with self._lock:
            return self._load(self._path(session_id))[1]

    def list(self, query: str = "") -> list[SessionSummary]:
        """Newest first. `query` keeps sessions whose title or messages contain every word (any case)."""
        terms = query.casefold().split()
        out = []
        with self._lock:
            if not self.folder.is_dir():
                return []
            seen = set()
            for path in sorted(self.folder.glob("*.json")):
                if not is_session_id(path.stem):
                    self._ignore(path)
                    continue
                seen.add(path.stem)
                try:
                    summary, text = self._summary(path)
                except (NotFound, NewerVersion):
                    continue
                if all(t in text for t in terms):
                    out.append(summary)
            for gone in self._cache.keys() - seen:
                del self._cache[gone]
        out.sort(key=lambda s: (s.updated_at, s.id), reverse=True)
        return out

    def to_markdown(self, session: Session) -> str:
        return to_markdown(session)

    def to_openai(self, session_id: str) -> bytes:
        """The chat's visible path as a JSON list of OpenAI chat messages."""
        return orjson.dumps(to_openai_messages(self.get(session_id)), option=orjson.OPT_INDENT_2)

    def export_sillytavern_file(self, session_id: str, folder: Path) -> Path:
        """<id>.jsonl holding `to_sillytavern`, written into `folder`."""
        path = folder / f"{session_id}.jsonl"
        atomic_write(path, self.to_sillytavern(session_id), keep_backup=False)
        return path

    def export_files(self, session_id: str, folder: Path) -> tuple[Path, Path]:
        """<id>.json holding exactly `export_bytes`, and <id>.md (`to_markdown`), written into `folder`."""
        json_path, md_path = folder / f"{session_id}.json", folder / f"{session_id}.md"
        atomic_write(json_path, self.export_bytes(session_id), keep_backup=False)
        atomic_write(md_path, self.to_markdown(self.get(session_id)).encode("utf-8"), keep_backup=False)
        return json_path, md_path

    def pop_problems(self) -> builtins.list[str]:
        with self._lock:
            out, self.problems = self.problems, []
            return out

    # ---- writing ------------------------------------------------------------------------------------

    def create(self, **fields: Any) -> Session:
        """A new, saved session. `fields` are Session fields other than id, times and schema_version."""
        fixed = {"id", "created_at", "updated_at", "schema_version"} & fields.keys()
        if fixed:
            raise InvalidInput(f"create() sets {', '.join(sorted(fixed))} itself.")
        now = now_iso()
        try:
            session = Session.model_validate(
                {**fields, "id": self._unused_id(), "created_at": now, "updated_at": now}
            )
        except ValidationError as exc:
            raise invalid_session(exc) from None
        self.save(session)
        return session

    def save(self, session: Session, *, allow_shrink: bool = False) -> None:
        """Write `session`, bumping updated_at and filling an empty title.

        Refuses (ShrinkRefused) to replace a stored session that has more messages, unless allow_shrink.
        On failure the object is left exactly as it was.
        """
        with self._lock:
            path = self._path(session.id)
            if session.id in self._deleted:
                raise NotFound("This chat was deleted; start a new one or restore it from the trash folder.")
            stored = self._stored_count(path)
            if stored > len(session.messages) and not allow_shrink:
                raise ShrinkRefused(
                    f"Not saved: this would shorten the saved chat from {stored} to {len(session.messages)} "
                    "messages. Confirm that you want to delete messages."
                )
            now = now_iso()
            title = clean_line(self._merged_title(session) or auto_title(session.messages))[:TITLE_MAX]
            data = encode(session.model_copy(update={"updated_at": now, "title": title}))
            try:
                session_from_doc(orjson.loads(data), session.id)  # never write what we could not read back
            except InvalidInput as exc:
                raise InvalidInput(f"Not saved: {exc.message}") from None
            atomic_write(path, data)
            session.updated_at, session.title = now, title
            self._remember(path, session)
            revision = self._revisions.get(session.id, 0) + 1
            self._revisions[session.id] = revision
            self._seen.set(session, revision, title)

    def _merged_title(self, session: Session) -> str:
        """The title to save: the session's own, unless it was read before a save that changed the title
        and has not changed it itself (a rename while a reply streams is kept)."""
        seen = self._seen.get(session)
        if seen is None or seen[0] >= self._revisions.get(session.id, 0) or session.title != seen[1]:
            return session.title
        stored = self._cache.get(session.id)
        return stored[1].title if stored is not None else session.title

    def rename(self, session_id: str, title: str) -> Session:
        title = clean_line(str(title))[:TITLE_MAX]
        if not title:
            raise InvalidInput("The title cannot be empty.", field="title")
        with self._lock:
            session = self.get(session_id)
            session.title = title
            self.save(session)
            return session

    def duplicate(self, session_id: str, upto: int | None = None) -> Session:
        """A new session with a copy of the first `upto` messages (all when None): "branch here"."""
        with self._lock:
            src = self.get(session_id)
            n = len(src.messages)
            if upto is None:
                upto = n
            if type(upto) is not int or not 0 <= upto <= n:
                raise InvalidInput(f"'upto' must be a whole number from 0 to {n}.", field="upto")
            copy = src.model_copy(
                deep=True,
                update={
                    "id": self._unused_id(),
                    "created_at": now_iso(),
                    "title": f"{src.title} (copy)".strip(),
                },
            )
            copy.messages = copy.messages[:upto]
            self.save(copy)
            return copy

    def delete(self, session_id: str) -> None:
        """Move the session (and its backups) to <data_dir>/trash."""
        with self._lock:
            path = self._path(session_id)
            if not path.is_file():
                raise NotFound(f"No chat with id {session_id}.")
            trash = self.data_dir / "trash"
            move_to(trash, path)
            for bak in path.parent.glob(path.name + "*.bak"):
                move_to(trash, bak)
            self._deleted.add(session_id)
            self._cache.pop(session_id, None)

    def import_bytes(self, data: bytes | str) -> Session:
        """Import any supported format as a new session (a new id, always). Nothing is written on failure."""
        with self._lock:
            raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
            if is_st_jsonl(raw):
                session = session_from_doc(
                    _from_sillytavern(parse_st_jsonl(raw)), self._unused_id(), imported=True
                )
            else:
                session = parse_import(data, self._unused_id())
            if self.check_params is not None:
                self.check_params(session.params)
            self.save(session)
            return session

    def to_sillytavern(self, session_id: str) -> bytes:
        """The chat's visible path as a SillyTavern chat file (JSONL; a group chat as a group chat)."""
        doc = orjson.loads(self.export_bytes(session_id))
        names = [str(c.get("title") or c.get("name")) for c in doc.get("characters") or []]
        return to_st_jsonl({**doc, "characters": names})

    # ---- internals ----------------------------------------------------------------------------------

    def _path(self, session_id: str) -> Path:
        if not is_session_id(session_id):
            shown = repr(session_id)[:40]
            raise NotFound(f"No chat with id {shown}: session ids look like s-20250131-120000-a1b2c3.")
        return self.folder / f"{session_id}.json"

    def _unused_id(self) -> str:
        while True:
            sid = new_session_id()
            if not (self.folder / f"{sid}.json").exists() and sid not in self._deleted:
                return sid

    def _load(self, path: Path) -> tuple[Session, bytes]:
        """Parse a stored file; a damaged one is moved to corrupt/ and reported, then NotFound."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"No chat with id {path.stem}.") from None
        except OSError as exc:
            raise StorageError(f"Could not read chat {path.stem}: {exc.strerror or exc}.") from exc
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict):
                raise InvalidInput("not a JSON object")
            session = session_from_doc(doc, path.stem)
            if doc.get("schema_version") != SCHEMA_VERSION:
                data = self._migrate_file(path, session, data, doc.get("schema_version"))
            return session, data
        except orjson.JSONDecodeError as exc:
            reason = f"not valid JSON ({exc})"
        except NewerVersion as exc:  # not damaged: leave it where it is
            self._report(f"Skipped chat {path.stem}: {exc.message}")
            raise
        except InvalidInput as exc:
            reason = exc.message
        self._cache.pop(path.stem, None)
        try:
            moved = move_to(self.data_dir / "corrupt", path)
            where = f"it was moved to {moved.parent.name}/{moved.name}"
        except EngineError:
            where = "it could not be moved aside"
        self._report(
            f"Chat file {path.name} is damaged ({reason}); {where}. Its .bak may hold an older copy."
        )
        raise NotFound(f"Chat {path.stem} is damaged and was set aside.")

    def _migrate_file(self, path: Path, session: Session, data: bytes, version: object) -> bytes:
        """Rewrite an older file in the current schema; the original stays beside it as
        `<id>.json.v<N>.bak`, written once and never replaced."""
        keep = path.with_name(f"{path.name}.v{version}.bak")
        new = encode(session)
        try:
            if not keep.exists():
                atomic_write(keep, data, keep_backup=False)
            atomic_write(path, new)
        except StorageError as exc:  # read-only or full: it still opens, migrated in memory
            self._report(f"Chat {path.stem} could not be upgraded on disk: {exc.message}")
            return data
        return new

    def _summary(self, path: Path) -> tuple[SessionSummary, str]:
        key = self._stat(path)
        hit = self._cache.get(path.stem)
        if hit is None or hit[0] != key:
            self._remember(path, self._load(path)[0])
            hit = self._cache[path.stem]
        return hit[1], hit[2]

    def _stored_count(self, path: Path) -> int:
        """How many messages the stored copy has (0 if none or damaged)."""
        if not path.exists():
            return 0
        try:
            return self._summary(path)[0].messages
        except NotFound:  # it was damaged and has been set aside
            return 0

    def _remember(self, path: Path, session: Session) -> None:
        summary = SessionSummary(
            id=session.id, title=session.title, updated_at=session.updated_at, messages=len(session.messages)
        )
        text = "\n".join([session.title, *(m.content for m in session.messages)]).casefold()
        self._cache[session.id] = (self._stat(path), summary, text)

    @staticmethod
    def _stat(path: Path) -> tuple[int, int]:
        try:
            st = path.stat()
        except OSError:
            return (0, -1)
        return (st.st_mtime_ns, st.st_size)

    def _ignore(self, path: Path) -> None:
        if path.name not in self._ignored:
            self._ignored.add(path.name)
            self._report(f"Ignored sessions/{path.name}: not a chat file name. Use Import to add a chat.")

    def _report(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)


def _from_sillytavern(doc: dict[str, Any]) -> dict[str, Any]:
    """A parsed SillyTavern chat as our session document: its characters become minimal snapshots (their
    cards are not in the file), and swipes are read as version 1 alternatives."""

    def snapshot(name: str) -> dict[str, Any]:
        return {"name": safe_name(name), "title": name}

    out = {**doc, "schema_version": 1}
    if doc.get("characters"):
        out["characters"] = [snapshot(str(n)) for n in doc["characters"]]
        out["group"] = {}
    elif doc.get("character_name"):
        out["character"] = snapshot(str(doc["character_name"]))
    return out
