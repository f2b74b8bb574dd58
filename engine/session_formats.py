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
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

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

if TYPE_CHECKING:
    from .characters import Character

SCHEMA_VERSION = 2
MAX_IMPORT_BYTES = 10 * 1024 * 1024
ID_RE = re.compile(r"s-\d{8}-\d{6}-[0-9a-f]{6}")
EXPECTED = (
    "Expected a session JSON from this app, an OpenAI messages list, "
    "or a text-generation-webui history with 'internal'/'visible'."
)
WEBUI_GREETING = "<|BEGIN-VISIBLE-CHAT|>"
Role = Literal["user", "assistant", "system", "tool"]
ROLES: tuple[str, ...] = ("user", "assistant", "system", "tool")


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
    """One version of a message. A version that is not shown keeps, in `after`, the messages that followed
    it: the branch it heads (the shown version's continuation is the session's visible path)."""

    content: str
    time: MaybeTime = ""
    metrics: dict[str, Any] | None = None
    reasoning: str = ""
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    after: list[ChatMessage] = Field(default_factory=list)


class ChatMessage(_Strict):
    """One turn. `content` is what the prompt uses and what the user sees.

    A message that was edited or regenerated keeps every version in `alternatives` (a tree: each hidden
    version keeps its own continuation); `version` points at the shown one, and content/time/metrics
    mirror it (content wins if they disagree). Saved files also carry `versions` (how many) for readers.
    """

    role: Role
    content: str
    time: MaybeTime = ""
    metrics: dict[str, Any] | None = None
    reasoning: str = ""  # a thinking model's thought: kept and shown, never sent back to the model
    name: str | None = None  # who said it, in a group chat (the speaker's display name); a tool's name
    # an assistant message that called tools: OpenAI's [{"id", "type": "function", "function": {"name",
    # "arguments": JSON text}}]; the results follow as role "tool" messages that name their `tool_call_id`
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    alternatives: list[Alternative] = Field(default_factory=list)
    version: int = 0
    stopped: bool = False  # a partial reply: the user pressed Stop or the client went away
    interrupted: str | None = None  # why a fault cut the reply short (the model process crashed)
    greeting: bool = False  # the character's opening message

    @model_validator(mode="before")
    @classmethod
    def _drop_count(cls, data: Any) -> Any:
        """`versions` is written for readers; it is derived, so it is not read back."""
        if isinstance(data, dict) and "versions" in data:
            data = {k: v for k, v in data.items() if k != "versions"}
        return data

    @model_validator(mode="after")
    def _check(self) -> ChatMessage:
        if self.alternatives:
            if not 0 <= self.version < len(self.alternatives):
                raise ValueError(
                    f"version={self.version} is outside alternatives (0..{len(self.alternatives) - 1})"
                )
            if self.alternatives[self.version].after:
                raise ValueError("the shown version's continuation is the chat itself, not 'after'")
            self.sync()
        elif self.version != 0:
            raise ValueError("version must be 0 when there are no alternatives")
        return self

    def sync(self) -> None:
        """Copy the shown content/time/metrics into alternatives[version]."""
        if self.alternatives:
            alt = self.alternatives[self.version]
            alt.content, alt.time, alt.metrics = self.content, self.time, self.metrics
            alt.reasoning, alt.name, alt.tool_calls = self.reasoning, self.name, self.tool_calls

    def branch(self, content: str = "", time: str = "", after: list[ChatMessage] | None = None) -> None:
        """Show a new version with `content`; the shown one becomes a hidden version that keeps `after`
        (the messages that followed it)."""
        if not self.alternatives:
            self.alternatives.append(self._as_version())
        self.sync()
        self.alternatives[self.version].after = list(after or [])
        time = _iso_or_empty(time)
        self.alternatives.append(Alternative(content=content, time=time, name=self.name))
        self.version = len(self.alternatives) - 1
        self.content, self.time, self.metrics, self.stopped = content, time, None, False
        self.reasoning, self.interrupted, self.tool_calls = "", None, None

    def new_version(self, time: str = "", after: list[ChatMessage] | None = None) -> None:
        """Start a regenerated version of a reply: an empty one is shown, the old one is kept."""
        if self.role != "assistant":
            raise InvalidInput("Only assistant replies can be regenerated.")
        self.branch("", time, after)

    def select(self, index: int, after: list[ChatMessage] | None = None) -> list[ChatMessage]:
        """Show version `index` (negative counts from the end). The version shown until now keeps `after`
        (what followed it); the chosen version's continuation is returned (and no longer kept in it)."""
        n = len(self.alternatives)
        if not -n <= index < n:
            raise InvalidInput(f"There is no version {index + 1} of this message (it has {max(n, 1)}).")
        if not n:
            return list(after or [])
        self.sync()
        self.alternatives[self.version].after = list(after or [])
        self.version = index % n
        alt = self.alternatives[self.version]
        self.content, self.time, self.metrics = alt.content, alt.time, alt.metrics
        self.reasoning, self.name, self.tool_calls = alt.reasoning, alt.name, alt.tool_calls
        rest, alt.after = alt.after, []
        return rest

    def _as_version(self) -> Alternative:
        return Alternative(
            content=self.content,
            time=self.time,
            metrics=self.metrics,
            reasoning=self.reasoning,
            name=self.name,
            tool_calls=self.tool_calls,
        )

    def to_openai(self) -> dict[str, Any]:
        """The message as OpenAI's chat format has it (a call's or a tool result's fields included)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.role == "tool":
            out |= {"tool_call_id": self.tool_call_id or "", "name": self.name or ""}
        return out


Alternative.model_rebuild()


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
    characters: list[dict[str, Any]] = Field(default_factory=list)  # a group chat's members (snapshots)
    group: dict[str, Any] | None = None  # a group chat's settings (engine.group_chat.GroupSettings)
    messages: list[ChatMessage] = Field(default_factory=list)

    @field_validator("title")
    @classmethod
    def _one_clean_line(cls, v: str) -> str:
        return clean_line(v)

    def character_snapshot(self) -> Character | None:
        """The character the chat keeps (its snapshot from when the chat began), or None."""
        from .characters import Character

        return Character.model_validate(self.character) if self.character else None

    @staticmethod
    def is_id(value: object) -> bool:
        """Whether `value` has the shape of a session id (s-YYYYMMDD-HHMMSS-xxxxxx)."""
        return is_session_id(value)

    @classmethod
    def from_doc(cls, doc: dict[str, Any], session_id: str) -> Session:
        """One of our session documents (as the API returns it; older schema versions too), checked."""
        return session_from_doc(doc, session_id)


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
    doc = session.model_dump()
    _count_versions(doc["messages"])
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"The session cannot be stored as JSON: {exc}.") from None


def _count_versions(messages: list[dict[str, Any]]) -> None:
    """Each message with versions also carries `versions` (how many), as the API documents."""
    for m in messages:
        if m["alternatives"]:
            m["versions"] = len(m["alternatives"])
            for alt in m["alternatives"]:
                _count_versions(alt["after"])


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
def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 2 keeps a tree: a message's `selected` alternative is its shown `version`, and each version
    can keep the messages that followed it. A version 1 file reads unchanged."""
    messages = doc.get("messages")
    if not isinstance(messages, list):
        return doc
    out = []
    for m in messages:
        if isinstance(m, dict) and "selected" in m and "version" not in m:
            m = {("version" if k == "selected" else k): v for k, v in m.items()}
        out.append(m)
    return {**doc, "messages": out}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


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
        if role not in ROLES or (role == "tool" and not isinstance(item.get("tool_call_id"), str)):
            shown = repr(role)[:40]
            raise InvalidInput(
                f"{where}.role must be one of user, assistant, system, or tool with the tool_call_id it "
                f"answers (got {shown})."
            )
        thought = item.get("reasoning_content")
        content = item.get("content")
        out.append(
            ChatMessage(
                role=cast(Role, role),
                content=_openai_text("" if content is None and item.get("tool_calls") else content, where),
                reasoning=thought if isinstance(thought, str) and role == "assistant" else "",
                **_openai_tool_fields(item, role, where),
            )
        )
    system = []
    while out and out[0].role == "system":
        system.append(out.pop(0).content)
    return out, "\n\n".join(system) if system else None


def _openai_tool_fields(item: dict[str, Any], role: str, where: str) -> dict[str, Any]:
    """An assistant message's tool_calls, a tool message's tool_call_id and name, checked."""
    if role == "tool":
        fields = {k: item.get(k) for k in ("tool_call_id", "name")}
        if not all(v is None or isinstance(v, str) for v in fields.values()):
            raise InvalidInput(f"{where}: tool_call_id and name must be strings.")
        return fields
    calls = item.get("tool_calls")
    if role != "assistant" or not calls:
        return {}
    from .chat import check_tool_calls

    try:
        return {"tool_calls": check_tool_calls(calls, 0)}
    except InvalidInput as exc:
        raise InvalidInput(f"{where}.tool_calls: {exc.message}") from None


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


def to_openai_messages(session: Session) -> list[dict[str, Any]]:
    """The visible path as OpenAI chat messages (what `POST /api/sessions/import` reads back)."""
    return [m.to_openai() for m in session.messages]


def to_markdown(session: Session) -> str:
    """A readable transcript of the visible path; each group reply is headed by its speaker's name."""
    assistant = session.character_name or "Assistant"
    lines = [f"# {session.title or 'Untitled chat'}", ""]
    lines.append(f"- Created: {session.created_at}")
    lines.append(f"- Updated: {session.updated_at}")
    if session.model:
        lines.append(f"- Model: {session.model.file}")
    if session.character_name:
        lines.append(f"- Character: {session.character_name}")
    members = [str(c.get("title") or c.get("name")) for c in session.characters]
    if members:
        lines.append(f"- Characters: {', '.join(members)}")
    if session.system_prompt:
        lines += ["", "## System prompt", "", *(f"> {line}" for line in session.system_prompt.splitlines())]
    lines += ["", "---"]
    for m in session.messages:
        speaker = m.name if m.role == "assistant" and m.name else assistant  # a group reply's speaker
        name = {"user": "User", "assistant": speaker, "system": "System", "tool": "Tool"}[m.role]
        if m.role == "tool" and m.name:
            name = f"Tool {m.name}"
        head = f"**{name}**"
        if m.time:
            head += f" · {m.time}"
        if m.alternatives:
            head += f" · version {m.version + 1} of {len(m.alternatives)}"
        if m.greeting:
            head += " · greeting"
        lines += ["", head, ""]
        if m.reasoning:
            lines += ["<details><summary>Thinking</summary>", "", m.reasoning, "", "</details>", ""]
        lines.append(m.content)
        for call in m.tool_calls or []:
            fn = call.get("function") or {}
            lines += ["", f"`{fn.get('name')}({fn.get('arguments')})`"]
        if m.interrupted:
            lines += ["", f"_(interrupted: {m.interrupted})_"]
        elif m.stopped:
            lines += ["", "_(stopped)_"]
    return "\n".join(lines) + "\n"
