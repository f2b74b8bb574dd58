"""Slash commands. Each takes the rest of the line; bad input raises EngineError or prints a hint."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from engine import InvalidInput, NotFound, SamplingParams, Session

from .tools_cmd import list_tools

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator

    from .clients import ChatClient, Event
    from .render import Output

PARAM_NAMES = tuple(SamplingParams.model_fields)


class App(Protocol):
    """What the commands drive: the terminal app (cli/app.py), described here so neither imports the other."""

    client: ChatClient
    out: Output
    interactive: bool
    failures: int
    quitting: bool
    sticky: dict[str, Any]

    def new_chat(self, preset: str | None, system_prompt: str | None, *, quiet: bool = False) -> None: ...

    def impersonate(self) -> None: ...

    def stream(
        self,
        start: Callable[[threading.Event], Iterator[Event]],
        *,
        name: str | None = None,
        saves: bool = True,
    ) -> None: ...


HELP = """\
Type a message to chat. Commands:
  /save [name]           save the chat (it is saved every turn anyway); a name titles it
  /load [name|id|N]      open a saved chat by id, title or number from /sessions
  /sessions              list saved chats
  /params [k=v ...]      show the sampling parameters, or set some: /params temperature=0.8 max_tokens=100
  /params reset          back to the defaults
  /system [N|name|text]  pick a preset for a new chat (no argument lists them), or set a custom system prompt
  /preset NAME           start a new chat with a preset
  /think on|off|auto     thinking models: think before answering or not (auto: the model's default)
  /think budget N|none   cap the thought at N tokens
  /regen [N]             regenerate the last reply, or reply N (the old one is kept on its branch)
  /edit N TEXT           a new version of message N (yours: a new reply follows); the old branch is kept
  /versions [N]          which messages have versions, or the versions of message N
  /version N K           show version K of message N, and the branch that follows it
  /impersonate           the model drafts your next message (nothing is sent or saved)
  /persona [NAME|-]      who you are ({{user}}): list personas, pick one, or - for the default
  /lore [NAME ...|-]     lorebooks for this chat: list them, attach these, or - for none
  /prefix [TEXT]         every reply starts with TEXT (no text: replies start freely)
  /tools [use NAME]      the MCP tools the model may call (each asks y/N); use: the next reply calls NAME
  /clear                 start a new chat (the old one stays saved)
  /status                model, backend, GPU and context use
  /help                  this list
  /quit, /exit           leave (the chat is saved)
Ctrl+C stops a reply; Ctrl+C twice at the prompt exits. Start a message with // to send a leading /."""

SHOWN_MESSAGES = 10  # /load shows the last few turns


def parse_assignments(text: str) -> dict[str, Any]:
    """'temperature=0.8 stop="###"' -> {"temperature": 0.8, "stop": "###"}; values are JSON if they parse."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InvalidInput(f"Bad quoting in '{text}': {exc}.") from None
    out: dict[str, Any] = {}
    for word in words:
        name, eq, raw = word.partition("=")
        if not eq or not name:
            raise InvalidInput(f"Bad argument '{word}': use name=value, e.g. /params temperature=0.8.")
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = raw
    return out


def _short(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


class Commands:
    def __init__(self, app: App) -> None:
        self.app, self.client, self.out = app, app.client, app.out
        self.listed: list[str] = []  # ids from the last /sessions, for /load N
        self.table: dict[str, Callable[[str], None]] = {
            "save": self.save,
            "load": self.load,
            "sessions": self.sessions,
            "params": self.params,
            "system": self.system,
            "preset": self.preset,
            "regen": self.regen,
            "edit": self.edit,
            "versions": self.versions,
            "version": self.version,
            "impersonate": self.impersonate,
            "persona": self.persona,
            "lore": self.lore,
            "prefix": self.prefix,
            "think": self.think,
            "tools": lambda arg: list_tools(self.app, arg),
            "clear": self.clear,
            "status": self.status,
            "help": self.help,
            "quit": self.quit,
            "exit": self.quit,
        }

    def run(self, line: str) -> None:
        name, _, arg = line[1:].partition(" ")
        handler = self.table.get(name.lower())
        if handler is None:
            self.out.hint(f"Unknown command /{name}. Type /help.")
            self.app.failures += 1
            return
        handler(arg.strip())

    # --- chats --------------------------------------------------------------------------------------

    def current(self) -> dict[str, Any] | None:
        """The saved summary of the open chat ({"id", "title", "updated_at", "messages"}), if saved."""
        sid = self.client.state.session_id
        return next((s for s in self.client.sessions() if s["id"] == sid), None) if sid else None

    def save(self, arg: str) -> None:
        if arg:
            self.client.rename(arg)
        summary = self.current()
        if summary:
            self.out.print(f"Saved as {summary['id']}: {summary['title'] or 'untitled'}")
        else:
            self.out.hint("Nothing to save yet: the chat is saved when you send its first message.")

    def load(self, arg: str) -> None:
        if not arg:
            self.sessions("")
            self.out.hint("Type /load ID, /load N (a number from the list) or /load TITLE.")
            return
        self.show_session(self.client.open(self.resolve(arg)))

    def resolve(self, ref: str) -> str:
        if Session.is_id(ref):
            return ref
        if ref.isdecimal() and self.listed and 1 <= int(ref) <= len(self.listed):
            return self.listed[int(ref) - 1]
        items = self.client.sessions()
        key = ref.casefold()
        exact = [s for s in items if s["title"].casefold() == key]
        if exact:
            return str(exact[0]["id"])  # the newest of that title
        partial = [s for s in items if key in s["title"].casefold()]
        if len(partial) == 1:
            return str(partial[0]["id"])
        if not partial:
            raise NotFound(f"No saved chat has the id or title '{ref}'. Type /sessions to list them.")
        shown = ", ".join(f"{s['id']} ({s['title']})" for s in partial[:3])
        raise InvalidInput(f"{len(partial)} chats match '{ref}': {shown}. Use /load ID.")

    def show_session(self, session: Session) -> None:
        title, n = session.title or "untitled", len(session.messages)
        self.out.success(f"Loaded {session.id}: {title} ({n} messages)")
        turns = [m for m in session.messages if m.role in ("user", "assistant")]
        if len(turns) > SHOWN_MESSAGES:
            self.out.info(f"… {len(turns) - SHOWN_MESSAGES} earlier messages")
        for m in turns[-SHOWN_MESSAGES:]:
            name = "you" if m.role == "user" else (session.character_name or "Assistant")
            self.out.message(m.role, name, m.content + (" [stopped]" if m.stopped else ""))

    def sessions(self, arg: str) -> None:
        items = self.client.sessions()
        if not items:
            self.out.info("No saved chats yet.")
            return
        self.listed = [str(s["id"]) for s in items]
        rows = [
            (i, s["id"], s["title"] or "untitled", _when(s["updated_at"]), s["messages"])
            for i, s in enumerate(items, 1)
        ]
        self.out.table("Saved chats", ("#", "id", "title", "updated", "messages"), rows)

    def clear(self, arg: str) -> None:
        state = self.client.state
        self.app.new_chat(state.preset, state.system_prompt)

    # --- params and prompts -------------------------------------------------------------------------

    def params(self, arg: str) -> None:
        if arg.lower() == "reset":
            self.app.sticky = {}
            self.client.state.params = {}
            self.out.success("Parameters reset to the defaults.")
            return
        if arg and "=" not in arg and arg in PARAM_NAMES:
            values, _ = self.client.effective_params()
            self.out.print(f"{arg} = {json.dumps(values[arg])}")
            return
        if arg:
            changes = parse_assignments(arg)
            self.client.state.set_params(changes)  # the engine's bounds; an error names the field
            self.app.sticky.update(changes)
            self.out.success("Set " + ", ".join(f"{k}={json.dumps(v)}" for k, v in changes.items()) + ".")
            return
        values, exact = self.client.effective_params()
        chat = self.client.state.params
        rows = []
        for name in PARAM_NAMES:
            shown = json.dumps(values[name])
            shown = shown if len(shown) <= 60 else shown[:57] + "…"
            rows.append((name, shown, "this chat" if name in chat else ""))
        self.out.table("Sampling parameters", ("name", "value", "set by"), rows)
        if not exact:
            self.out.info("Values this chat and its preset leave unset come from the server's config.")

    def system(self, arg: str) -> None:
        presets = self.client.presets()
        if not arg:
            rows = [(0, "(none)", "the default system prompt")]
            for i, p in enumerate(presets, 1):
                rows.append((i, p["name"], p.get("description") or p.get("title") or ""))
            rows = [(n, name, desc if len(desc) <= 70 else desc[:67] + "…") for n, name, desc in rows]
            self.out.table("Presets", ("#", "name", "description"), rows)
            if not self.app.interactive:
                self.out.hint("Pick one with /system N or /system NAME, or set your own: /system TEXT.")
                return
            try:
                arg = input("Pick a number or name (Enter keeps this chat): ").strip()
            except (EOFError, KeyboardInterrupt):
                arg = ""
            if not arg:
                return
        found, name = self._pick(arg, presets)
        if found:
            self.app.new_chat(name, None)
        else:
            self.app.new_chat(None, arg)

    def preset(self, arg: str) -> None:
        if not arg:
            self.system("")
            return
        found, name = self._pick(arg, self.client.presets())
        if not found:
            raise NotFound(f"There is no preset named '{arg}'. Type /system to list them.")
        self.app.new_chat(name, None)

    def _pick(self, arg: str, presets: list[dict[str, Any]]) -> tuple[bool, str | None]:
        """(True, name) for a preset by number or name, (True, None) for 0 (no preset), else (False, None)."""
        if arg.isdecimal():
            n = int(arg)
            if n > len(presets):
                raise InvalidInput(f"There is no preset number {n}: pick 0 to {len(presets)} (type /system).")
            return True, (str(presets[n - 1]["name"]) if n else None)
        key = arg.casefold()
        for p in presets:
            if key in (str(p["name"]).casefold(), str(p.get("title") or "").casefold()):
                return True, str(p["name"])
        return False, None

    def regen(self, arg: str) -> None:
        if not arg:
            self.app.stream(self.client.regenerate)
            return
        index = self._message_number(arg)
        self.app.stream(lambda cancel: self.client.regenerate(cancel, index))

    # --- branches: numbers count from 1 along the chat as shown -------------------------------------------

    def _message_number(self, word: str) -> int:
        if not word.isdecimal() or int(word) < 1:
            raise InvalidInput(f"'{word}' is not a message number: messages count from 1 (see /versions).")
        return int(word) - 1

    def edit(self, arg: str) -> None:
        number, _, text = arg.partition(" ")
        if not text.strip():
            raise InvalidInput("Usage: /edit N TEXT, e.g. /edit 3 What about green tea?")
        index = self._message_number(number)
        session = self.client.current()
        shown = session.messages if session is not None else []
        if index < len(shown) and shown[index].role == "user":  # the new reply streams
            self.app.stream(lambda cancel: self.client.edit(index, text.strip(), cancel) or iter(()))
            return
        self.client.edit(index, text.strip(), threading.Event())
        kept = f"the old one is kept (/versions {index + 1})"
        self.out.success(f"Message {index + 1} has a new version; {kept}.")

    def versions(self, arg: str) -> None:
        session = self.client.current()
        if session is None:
            self.out.info("No messages yet.")
            return
        if not arg:
            rows = [
                (i + 1, m.role, f"{m.version + 1}/{len(m.alternatives)}", _short(m.content))
                for i, m in enumerate(session.messages)
                if len(m.alternatives) > 1
            ]
            if not rows:
                self.out.info("No message has other versions yet: /edit N TEXT or /regen N makes one.")
                return
            self.out.table("Messages with versions", ("#", "role", "shown", "text"), rows)
            return
        index = self._message_number(arg)
        if index >= len(session.messages):
            raise InvalidInput(f"There is no message {index + 1}: this chat shows {len(session.messages)}.")
        m = session.messages[index]
        alternatives = m.alternatives or []
        rows = [
            (k + 1, "▸" if k == m.version else "", _short(a.content), len(a.after) if k != m.version else "")
            for k, a in enumerate(alternatives)
        ] or [(1, "▸", _short(m.content), "")]
        self.out.table(f"Versions of message {index + 1}", ("K", "shown", "text", "messages after"), rows)

    def version(self, arg: str) -> None:
        words = arg.split()
        if len(words) != 2 or not words[1].isdecimal() or int(words[1]) < 1:
            raise InvalidInput("Usage: /version N K, e.g. /version 3 1 (see /versions N).")
        session = self.client.select(self._message_number(words[0]), int(words[1]) - 1)
        self.show_session(session)

    # --- persona, lore, reply prefix ---------------------------------------------------------------------

    def impersonate(self, arg: str) -> None:
        self.app.impersonate()

    def persona(self, arg: str) -> None:
        items = self.client.personas()
        if not arg:
            rows = [
                (p["name"], "default" if p.get("default") else "", p.get("description", "")[:60])
                for p in items
            ]
            if rows:
                self.out.table("Personas", ("name", "", "description"), rows)
            else:
                self.out.info(
                    "No personas yet: create them in the web UI's Lorebooks tab or with PUT /api/personas."
                )
            self.out.hint("Pick one with /persona NAME (- for the default).")
            return
        if arg == "-":
            self.client.state.options["persona"] = None
            self.out.success("This chat uses the default persona.")
            return
        match = next((p["name"] for p in items if p["name"] == arg), None)
        match = match or next((p["name"] for p in items if p["name"].casefold() == arg.casefold()), None)
        if match is None:
            raise NotFound(f"There is no persona named {arg!r}. Type /persona to list them.")
        self.client.state.options["persona"] = match
        self.out.success(f"You are {match} in this chat.")

    def lore(self, arg: str) -> None:
        names = self.client.lorebooks()
        if not arg:
            self.out.print(
                "Lorebooks: " + (", ".join(names) if names else "none yet (import them in the web UI)")
            )
            self.out.hint("Attach with /lore NAME [NAME ...] (quote names with spaces), /lore - for none.")
            return
        if arg == "-":
            self.client.state.options["lorebooks"] = []
            self.out.success("No lorebooks attached.")
            return
        try:
            wanted = shlex.split(arg)
        except ValueError as exc:
            raise InvalidInput(f"Bad quoting in '{arg}': {exc}.") from None
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise NotFound(
                f"No lorebook named {', '.join(repr(u) for u in unknown)}. Type /lore to list them."
            )
        self.client.state.options["lorebooks"] = wanted
        self.out.success("Attached: " + ", ".join(wanted) + ".")

    def prefix(self, arg: str) -> None:
        self.client.state.options["reply_prefix"] = arg
        self.out.success(f"Replies start with {arg!r}." if arg else "Replies start freely.")

    # --- the rest -----------------------------------------------------------------------------------

    def status(self, arg: str) -> None:
        health = self.client.health()
        model = health.get("model") or {}
        if model.get("loaded"):
            where = "GPU" if model.get("gpu_offload") else "CPU"
            arch = model.get("architecture") or "?"
            model_text = f"{model.get('name')} ({arch}, n_ctx {model.get('n_ctx')}, {where})"
        else:
            model_text = f"not loaded: {model.get('error') or 'unknown reason'}"
        gpu = health.get("gpu") or {}
        if gpu.get("available"):
            used, total = gpu.get("vram_used_mb", "?"), gpu.get("vram_total_mb", "?")
            gpu_text = f"{gpu.get('name')}, VRAM {used}/{total} MiB"
        else:
            gpu_text = f"none ({gpu.get('reason') or 'no GPU found'})"
        state = self.client.state
        m = state.last_metrics
        ctx = f"{m.get('context_used', '?')}/{m.get('context_size', '?')} tokens" if m else "? (no reply yet)"
        summary = self.current()
        if summary:
            chat = f"{summary['id']}: {summary['title'] or 'untitled'} ({summary['messages']} messages)"
        else:
            chat = "new (saved when you send the first message)"
        prompt = f"preset {state.preset}" if state.preset else "custom" if state.system_prompt else "default"
        rows = [
            ("model", model_text),
            ("backend", f"{health.get('backend', '?')}, {self.client.where} ({health.get('status', '?')})"),
            ("GPU", gpu_text),
            ("context", ctx),
            ("chat", chat),
            ("prompt", prompt),
        ]
        if health.get("queue"):
            rows.append(("queue", f"{health['queue']} request(s)"))
        for key, value in rows:
            self.out.print(f"{key:<8} {value}")

    def think(self, arg: str) -> None:
        words = arg.lower().split()
        if words in (["on"], ["off"], ["auto"]):
            changes: dict[str, Any] = {"thinking": words[0]}
        elif len(words) == 2 and words[0] == "budget":
            changes = {
                "thinking_budget": None if words[1] == "none" else parse_assignments(f"b={words[1]}")["b"]
            }
        else:
            values, _ = self.client.effective_params()
            shown = values.get("thinking_budget")
            self.out.info(
                f"thinking = {values.get('thinking')}, budget = {'none' if shown is None else shown}"
            )
            self.out.hint("Set it with /think on|off|auto or /think budget N (none for no cap).")
            return
        self.client.state.set_params(changes)  # the engine's bounds; an error names the field
        self.app.sticky.update(changes)
        self.out.success("Set " + ", ".join(f"{k}={json.dumps(v)}" for k, v in changes.items()) + ".")

    def help(self, arg: str) -> None:
        self.out.print(HELP)

    def quit(self, arg: str) -> None:
        self.app.quitting = True
