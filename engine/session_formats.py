"""Session schema and its formats: our JSON, OpenAI messages, text-generation-webui history, Markdown.

Pure functions only; SessionStore (engine/sessions.py) does the file work.
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidInput, TooLarge
from .reasoning import FORMATS, split_text
from .text import clean_line

SCHEMA_VERSION = 1
MAX_IMPORT_BYTES = 10 * 1024 * 1024
ID_RE = re.compile(r"s-\d{8}-\d{6}-[0-9a-f]{6}")
EXPECTED = (
    "Expected a session JSON from this app, an OpenAI messages list, "
    "or a text-generation-webui history with 'internal'/'visible'."
)
WEBUI_GREETING = "<|BEGIN-VISIBLE-CHAT|>"
Role = Literal["user", "assistant", "system"]
ROLES: tuple[str, ...] = ("user", "assistant", "system")


_clock_lock = threading.Lock()
_last_stamp = datetime.min.replace(tzinfo=UTC)


def now_iso() -> str:
    """The current UTC time, strictly later than any earlier call at ms resolution, so that "newest
    first" is exact even for writes within one millisecond."""
    global _last_stamp
    with _clock_lock:
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        _last_stamp = max(now, _last_stamp + timedelta(milliseconds=1))
        return _fmt(_last_stamp)


def _fmt(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(v: str) -> str:
    """Normalise an ISO-8601 time to UTC 'YYYY-mm-ddTHH:MM:SS.mmmZ'; naive times are taken as UTC."""
    try:
        dt = datetime.fromisoformat(v)
        dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
        return _fmt(dt)
    except (ValueError, OverflowError):
        raise ValueError("expected an ISO-8601 time such as 2025-01-31T12:00:00Z") from None


def _iso_or_empty(v: str) -> str:
    return _iso(v) if v else ""


Time = Annotated[str, AfterValidator(_iso)]
MaybeTime = Annotated[str, AfterValidator(_iso_or_empty)]  # "" = unknown (foreign imports)


class NewerVersion(InvalidInput):
    """The document comes from a newer version of the app."""


def is_session_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def new_session_id() -> str:
    return f"s-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelInfo(_Strict):
    file: str
    size: int = Field(ge=0)
    sha256_1mib: str

    @classmethod
    def from_path(cls, path: Path) -> ModelInfo:
        """Name, size and sha256 of the first MiB: enough to recognise a GGUF file without hashing GBs."""
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read(1 << 20)).hexdigest()
        return cls(file=Path(path).name, size=Path(path).stat().st_size, sha256_1mib=digest)


class Alternative(_Strict):
    content: str
    time: MaybeTime = ""
    metrics: dict[str, Any] | None = None
    reasoning: str = ""


class ChatMessage(_Strict):
    """One turn. `content` is what the prompt uses and what the user sees.

    An assistant message that was regenerated keeps every version in `alternatives`; `selected` points at
    the shown one, and content/time/metrics mirror it (content wins if they disagree).
    """

    role: Role
    content: str
    time: MaybeTime = ""
    metrics: dict[str, Any] | None = None
    reasoning: str = ""  # a thinking model's thought: kept and shown, never sent back to the model
    alternatives: list[Alternative] = Field(default_factory=list)
    selected: int = 0
    stopped: bool = False  # a partial reply: the user pressed Stop or the client went away
    interrupted: str | None = None  # why a fault cut the reply short (the model process crashed)
    greeting: bool = False  # the character's opening message

    @model_validator(mode="after")
    def _check(self) -> ChatMessage:
        if self.alternatives:
            if self.role != "assistant":
                raise ValueError("only assistant messages can have alternatives")
            if not 0 <= self.selected < len(self.alternatives):
                raise ValueError(
                    f"selected={self.selected} is outside alternatives (0..{len(self.alternatives) - 1})"
                )
            self.sync()
        elif self.selected != 0:
            raise ValueError("selected must be 0 when there are no alternatives")
        return self

    def sync(self) -> None:
        """Copy the shown content/time/metrics into alternatives[selected]."""
        if self.alternatives:
            alt = self.alternatives[self.selected]
            alt.content, alt.time, alt.metrics = self.content, self.time, self.metrics
            alt.reasoning = self.reasoning

    def new_version(self, time: str = "") -> None:
        """Start a regenerated version: keep the current one as an alternative and show an empty one."""
        if self.role != "assistant":
            raise InvalidInput("Only assistant replies can be regenerated.")
        if not self.alternatives:
            self.alternatives.append(
                Alternative(
                    content=self.content, time=self.time, metrics=self.metrics, reasoning=self.reasoning
                )
            )
        self.sync()
        time = _iso_or_empty(time)
        self.alternatives.append(Alternative(content="", time=time))
        self.selected = len(self.alternatives) - 1
        self.content, self.time, self.metrics, self.stopped = "", time, None, False
        self.reasoning = ""

    def select(self, index: int) -> None:
        """Show alternative `index` (negative counts from the end)."""
        n = len(self.alternatives)
        if not -n <= index < n:
            raise InvalidInput(f"There is no version {index + 1} of this reply (it has {max(n, 1)}).")
        self.sync()
        self.selected = index % n
        alt = self.alternatives[self.selected]
        self.content, self.time, self.metrics = alt.content, alt.time, alt.metrics
        self.reasoning = alt.reasoning


class Session(_Strict):
    schema_version: int = SCHEMA_VERSION
    id: str = Field(pattern=f"^{ID_RE.pattern}$")
    title: str = ""  # one line: control characters and bidi overrides are dropped (engine/text.py)
    created_at: Time
    updated_at: Time
    model: ModelInfo | None = None
    character: dict[str, Any] | None = None  # full snapshot of the character used
    character_name: str | None = None
    system_prompt: str | None = None  # a custom prompt when no character is used
    params: dict[str, Any] = Field(default_factory=dict)
    persona: str | dict[str, str] | None = None  # a stored persona's name, or {"name", "description"}
    lorebooks: list[str] = Field(default_factory=list)  # attached lorebooks, by name
    reply_prefix: str = ""  # every reply starts with this text, which the model continues
    show_reply_prefix: bool = True  # keep the prefix in the saved message
    messages: list[ChatMessage] = Field(default_factory=list)

    @field_validator("title")
    @classmethod
    def _one_clean_line(cls, v: str) -> str:
        return clean_line(v)


class SessionSummary(_Strict):
    id: str
    title: str
    updated_at: str
    messages: int


# ---- encoding ---------------------------------------------------------------------------------------


def encode(session: Session) -> bytes:
    """The exact bytes we store and export."""
    for m in session.messages:
        m.sync()
    try:
        return orjson.dumps(session.model_dump(), option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"The session cannot be stored as JSON: {exc}.") from None


def auto_title(messages: list[ChatMessage], limit: int = 60) -> str:
    """The first user message on one line, cut at a word boundary."""
    text = next((m.content for m in messages if m.role == "user" and m.content.strip()), "")
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,.;:") + "…"


# ---- import -----------------------------------------------------------------------------------------

# schema_version n -> n + 1. Add one here whenever the schema changes; the old shape stays importable.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def parse_import(data: bytes | str, new_id: str) -> Session:
    """Read any supported format into a new Session with id `new_id`. Raises InvalidInput or TooLarge."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("The text is not valid UTF-8.") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(EXPECTED)
    if len(data) > MAX_IMPORT_BYTES:
        raise TooLarge(f"The file is {len(data) / 1e6:.1f} MB; sessions up to 10 MB can be imported.")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"The file is not valid UTF-8 JSON ({exc}). {EXPECTED}") from None
    if isinstance(doc, dict) and "schema_version" in doc:
        return session_from_doc(doc, new_id, imported=True)
    if isinstance(doc, dict) and ("internal" in doc or "visible" in doc):
        return _build(new_id, _from_webui(doc))
    if isinstance(doc, dict) and "messages" in doc:
        doc = doc["messages"]
        if not isinstance(doc, list):
            raise InvalidInput("OpenAI format: 'messages' must be a list of {role, content} objects.")
    if isinstance(doc, list):
        return _build(new_id, *_from_openai(doc))
    raise InvalidInput(EXPECTED)


def session_from_doc(doc: dict[str, Any], session_id: str, *, imported: bool = False) -> Session:
    """Validate one of our own session documents (any schema_version up to ours), under `session_id`."""
    version = doc.get("schema_version")
    if type(version) is not int or version < 1:
        raise InvalidInput(f"'schema_version' must be a whole number from 1 to {SCHEMA_VERSION}.")
    if version > SCHEMA_VERSION:
        raise NewerVersion(
            f"This session was saved by a newer version of the app (schema_version {version}); "
            "update the app to open it."
        )
    while version < SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
    doc = {**doc, "schema_version": SCHEMA_VERSION, "id": session_id}
    if imported:  # a hand-made file may leave these out
        now = now_iso()
        doc.setdefault("created_at", now)
        doc.setdefault("updated_at", now)
    try:
        session = Session.model_validate(doc)
    except ValidationError as exc:
        raise invalid_session(exc) from None
    if imported:
        encode(session)  # refuse now what could not be saved later (e.g. nesting too deep)
    return session


def invalid_session(exc: ValidationError) -> InvalidInput:
    """The first validation error, as a message naming the field (e.g. 'messages.3.role')."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))[:80] or "session"
    if err.get("type") == "extra_forbidden":
        return InvalidInput(f"Session JSON: unknown field '{loc}'.", field=loc)
    reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return InvalidInput(f"Session JSON: invalid '{loc}': {reason}.", field=loc)


def _build(new_id: str, messages: list[ChatMessage], system_prompt: str | None = None) -> Session:
    if not messages:
        raise InvalidInput("The file has no chat messages to import.")
    now = now_iso()
    session = Session(
        id=new_id, created_at=now, updated_at=now, system_prompt=system_prompt, messages=messages
    )
    session.title = auto_title(messages)
    return session


def _from_openai(items: list[Any]) -> tuple[list[ChatMessage], str | None]:
    """OpenAI chat messages. Leading system messages become the session's system prompt."""
    out: list[ChatMessage] = []
    for i, item in enumerate(items):
        where = f"OpenAI format: messages[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be an object with 'role' and 'content'.")
        role = item.get("role")
        role = "system" if role == "developer" else role
        if role not in ROLES:
            shown = repr(role)[:40]
            raise InvalidInput(f"{where}.role must be one of {', '.join(ROLES)} (got {shown}).")
        thought = item.get("reasoning_content")
        out.append(
            ChatMessage(
                role=cast(Role, role),
                content=_openai_text(item.get("content"), where),
                reasoning=thought if isinstance(thought, str) and role == "assistant" else "",
            )
        )
    system = []
    while out and out[0].role == "system":
        system.append(out.pop(0).content)
    return out, "\n\n".join(system) if system else None


def _openai_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidInput(f"{where}.content parts must be objects with a 'type'.")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise InvalidInput(f"{where}.content: a text part needs a string 'text'.")
                texts.append(part["text"])
            # other parts (images, audio) have no text to keep
        return "\n".join(texts)
    raise InvalidInput(f"{where}.content must be a string or a list of text parts.")


def _from_webui(doc: dict[str, Any]) -> list[ChatMessage]:
    """text-generation-webui: `internal` holds the raw text; `visible` is HTML-escaped for display."""
    key = "internal" if "internal" in doc else "visible"
    pairs = doc[key]
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs
    ):
        raise InvalidInput(
            f"text-generation-webui format: '{key}' must be a list of [user, bot] string pairs."
        )
    out: list[ChatMessage] = []
    for i, (user, bot) in enumerate(pairs):
        if key == "visible":
            user, bot = html.unescape(user), html.unescape(bot)
        if i == 0 and user in (WEBUI_GREETING, "") and bot:
            out.append(ChatMessage(role="assistant", content=bot, greeting=True))
            continue
        if user:
            out.append(ChatMessage(role="user", content=user))
        if bot:
            thought, answer = split_text(FORMATS["think"], bot) if "<think>" in bot else ("", bot)
            out.append(ChatMessage(role="assistant", content=answer, reasoning=thought))
    return out


# ---- Markdown ---------------------------------------------------------------------------------------


def to_markdown(session: Session) -> str:
    """A readable transcript."""
    assistant = session.character_name or "Assistant"
    lines = [f"# {session.title or 'Untitled chat'}", ""]
    lines.append(f"- Created: {session.created_at}")
    lines.append(f"- Updated: {session.updated_at}")
    if session.model:
        lines.append(f"- Model: {session.model.file}")
    if session.character_name:
        lines.append(f"- Character: {session.character_name}")
    if session.system_prompt:
        lines += ["", "## System prompt", "", *(f"> {line}" for line in session.system_prompt.splitlines())]
    lines += ["", "---"]
    for m in session.messages:
        name = {"user": "User", "assistant": assistant, "system": "System"}[m.role]
        head = f"**{name}**"
        if m.time:
            head += f" · {m.time}"
        if m.alternatives:
            head += f" · version {m.selected + 1} of {len(m.alternatives)}"
        if m.greeting:
            head += " · greeting"
        lines += ["", head, ""]
        if m.reasoning:
            lines += ["<details><summary>Thinking</summary>", "", m.reasoning, "", "</details>", ""]
        lines.append(m.content)
        if m.interrupted:
            lines += ["", f"_(interrupted: {m.interrupted})_"]
        elif m.stopped:
            lines += ["", "_(stopped)_"]
    return "\n".join(lines) + "\n"
