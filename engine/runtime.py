"""The composition root: settings -> backend, engine, and the stores and services (sessions, presets,
personas, lorebooks, models, ...). UI, API and CLI share it and reach the engine only through it and the
public types (engine/__init__.py)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from .backends.base import Backend, Message
from .characters import Character
from .chat import Engine
from .config import ModelSettings, Settings
from .errors import EngineError, InvalidInput, ModelUnavailable
from .gpu import GpuHistory, gpu_summary
from .logs import setup_logging
from .params import SamplingParams, invalid_from_validation, parse_params
from .preset_store import PresetStore
from .sessions import SessionStore

if TYPE_CHECKING:
    from .chat_prompt import ChatOptions
    from .lore_store import LorebookStore
    from .model_manager import ModelManager
    from .personas import PersonaStore
    from .prompt_view import Draft
    from .sampling_presets import SamplingPresetStore
    from .session_formats import Session
    from .sysinfo import ProcessHistory
    from .tools.hub import ToolHub
    from .tools.loop import Approve
    from .turn import Mode, Turn

log = logging.getLogger("engine.runtime")


def build_backend(settings: Settings, model: ModelSettings | None = None) -> Backend:
    if settings.backend.kind == "openai":
        from .backends.openai import OpenAIBackend

        if not settings.backend.url:
            raise ModelUnavailable(
                "backend.kind is openai but no URL is set: pass --backend-url or backend.url."
            )
        return OpenAIBackend(
            settings.backend.url, api_key=settings.backend.api_key, model=settings.backend.model
        )
    from .backends.worker_client import WorkerBackend

    model = model or settings.model
    return WorkerBackend(
        model,
        settings.resolve(model.path),
        gpu_required=settings.gpu.required,
        data_dir=settings.data_path,
        policy=settings.worker,
    )


class Runtime:
    def __init__(self, settings: Settings, *, warnings: list[str] | None = None, load: bool = True) -> None:
        self.settings = settings
        self.warnings = list(warnings or [])
        self.data_dir = settings.data_path
        setup_logging(self.data_dir, settings.logging.level)
        self.sessions = SessionStore(self.data_dir)
        self.presets = PresetStore(
            shipped_dir=settings.resolve(settings.presets_dir),
            user_dir=self.data_dir / "presets",
            trash_dir=self.data_dir / "trash" / "presets",
        )
        self.sessions.check_params = self.presets.check_params = self.check_sampling
        self.models_dir = settings.resolve(settings.models_dir)
        self.engine = Engine(None, chat_content=settings.logging.chat_content)
        self.gpu_history = GpuHistory()
        self.started_at = time.time()
        self._switch_lock = threading.Lock()
        self._members: dict[str, Any] = {}  # the stores and services made on first use (`_member`)
        self._members_lock = threading.Lock()
        if load:
            self.load()

    def load(self) -> None:
        """Load the configured backend. A failure is kept as `load_error`: the server still starts."""
        try:
            self.engine.replace_backend(build_backend(self.settings))
        except EngineError as exc:
            self.engine.load_error = exc.message
            log.error("model not loaded: %s", exc.message)

    def switch_model(self, path: str, **overrides: Any) -> dict[str, Any]:
        """Load another GGUF file; if it fails, the current model stays."""
        with self._switch_lock:
            candidate = self.resolve_model(path)
            try:
                model = ModelSettings.model_validate(
                    {**self.settings.model.model_dump(), **overrides, "path": str(candidate)}
                )
            except ValidationError as exc:
                raise invalid_from_validation(exc) from None
            try:
                backend = build_backend(self.settings, model)
            except ModelUnavailable as exc:  # the file asked for is unusable; the current model is fine
                raise InvalidInput(exc.message, field="path") from None
            self.engine.replace_backend(backend)
            self.settings.model = model
            return backend.model_info()

    def resolve_model(self, path: str) -> Path:
        try:
            return self._resolve_model(path)
        except (OSError, ValueError, RuntimeError):  # a name too long, a NUL byte, ~nosuchuser
            raise InvalidInput(f"Not a usable model path: {path[:80]!r}.", field="path") from None

    def _resolve_model(self, path: str) -> Path:
        p = Path(path)
        if not p.is_absolute():
            p = (
                self.models_dir / p.name
                if (self.models_dir / p.name).exists()
                else self.settings.resolve(path)
            )
        if p.suffix.lower() != ".gguf":
            raise InvalidInput(f"{p.name} is not a .gguf file.", field="path")
        if not p.is_file():
            raise InvalidInput(f"Model file not found: {p}. Put it in {self.models_dir}.", field="path")
        return p

    # --- turns ---------------------------------------------------------------------------------------

    def turn(
        self,
        messages: Sequence[Message] | None = None,
        *,
        session: Session | str | None = None,
        mode: Mode = "send",
        user_text: str | None = None,
        preset: str | Character | None = None,
        params: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
        index: int | None = None,
        speaker: str | None = None,
        characters: list[str] | None = None,
        group: dict[str, Any] | None = None,
        tools: str | list[str] | list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        tool_approval: str | list[str] | None = None,
        approve: Approve | None = None,
    ) -> Turn:
        """The one way to run a turn. Everything is checked now: a bad request raises at once.

        - No `session`: `messages` is the whole conversation, nothing is saved. With a `preset` (a name or a
          draft Character) or chat `options`, the prompt is built as a new session with that preset would
          build it; with neither, the messages go to the model as they are.
        - `session="new"`: a session is made from `messages` (the last one is the user's turn to send).
        - A session (or its id): `mode` send (`user_text`, or the last user message;
          in a group chat, none: a member answers now, after the last message), edit (user message
          `index` gets a new version with `user_text`, and a new reply follows it), regenerate (reply
          `index`, by default the last, gets a new version), continue, or impersonate (a draft of the user's
          next message; nothing is saved). An edit or a regeneration branches: what followed the old
          version stays with it. The completed turn is saved.
        `params` are sampling overrides; `options` the chat options (persona, lorebooks, reply_prefix,
        show_reply_prefix). Group chats: `characters` (preset names, in place of `preset`) and `group`
        (engine.group_chat.GroupSettings) start one; `speaker` forces who answers.

        Tools (engine/tools/loop.py): `tools` "auto" (every enabled MCP tool), "none", a list of MCP tool
        names, or OpenAI function specs that the caller runs itself (the turn then ends at the model's
        calls, finish_reason "tool_calls"). `tool_choice` as OpenAI's. MCP calls run as `tool_approval`
        (default: the tools.approval setting) allows; `approve(call)` asks a person ("allow", "always" or
        "deny"); without it a call that needs asking is refused, and the model reads the refusal. The turn
        streams `ToolCall` and `ToolResult` events; a session keeps calls and results as messages.
        """
        from .turn import TurnRequest, start_turn

        request = TurnRequest(
            messages=list(messages or []),
            mode=mode,
            user_text=user_text,
            preset=preset,
            params=params,
            options=options,
            cancel=cancel,
            index=index,
            speaker=speaker,
            characters=characters,
            group=group,
            tools=tools,
            tool_choice=tool_choice,
            tool_approval=tool_approval,
            approve=approve,
        )
        return start_turn(self, session, request)

    def edit(self, session_id: str, index: int, content: str) -> Session:
        """A new version of message `index` of a saved chat, with no reply written (for the user's message,
        `turn(mode="edit")` writes the new reply too). What followed stays with the old version."""
        from .conversation import edit_message

        return edit_message(self, session_id, index, content)

    def select_version(self, session_id: str, index: int, version: int) -> Session:
        """Show version `version` of message `index` of a saved chat, and the branch that follows it."""
        from .conversation import show_version

        return show_version(self, session_id, index, version)

    # --- chats -----------------------------------------------------------------------------------------

    def new_session(
        self,
        *,
        character: str | None = None,
        system_prompt: str | None = None,
        params: dict[str, Any] | None = None,
        greeting: bool = True,
        options: dict[str, Any] | None = None,
        characters: list[str] | None = None,
        group: dict[str, Any] | None = None,
    ) -> Session:
        """A new saved chat with preset `character` (its snapshot, its sampling under `params`, its greeting)
        or a custom `system_prompt`, and the chat `options` (persona, lorebooks, reply_prefix,
        show_reply_prefix). `characters` (preset names, in place of `character`) makes a group chat with
        `group` settings. Everything is checked first, the model too: no chat file for a model not there."""
        from .chat_prompt import ChatOptions
        from .conversation import new_session

        return new_session(
            self,
            character=character,
            system_prompt=system_prompt,
            params=params,
            greeting=greeting,
            options=ChatOptions(**(options or {})),
            characters=characters,
            group=group,
        )

    def chat_options(self, session: Session | None) -> ChatOptions:
        """The chat options of `session` (persona, lorebooks, reply_prefix, show_reply_prefix), or a new
        chat's."""
        from .chat_prompt import ChatOptions
        from .conversation import session_options

        return session_options(session) if session is not None else ChatOptions()

    def update_options(self, session: Session, changes: dict[str, Any]) -> None:
        """Check the chat options in `changes` (only those given) and set them on `session` (not saved)."""
        from .conversation import update_options

        update_options(self, session, changes)

    def draft(
        self,
        messages: Sequence[Message] | None = None,
        *,
        session: Session | str | None = None,
        user_text: str | None = None,
        preset: str | Character | None = None,
        params: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        characters: list[str] | None = None,
        speaker: str | None = None,
        group: dict[str, Any] | None = None,
        mode: str = "normal",
    ) -> Draft:
        """The prompt a turn would send, built and not sent: nothing is generated or saved. The arguments
        are `turn`'s: no `session`, `messages` is the whole conversation (with no preset and no options, sent
        as it is); `session="new"`, the first turn of a new chat with them; a session (or its id), its next
        turn, with `user_text` sent. A group chat: `characters` (without a session), `speaker`, `group`, as
        `turn` takes them. `mode` "impersonate" drafts the user's next message instead.
        `.messages`, `.params`, `.lore` (the lore that fired), `.plan`."""
        from .prompt_view import draft

        msgs = list(messages or [])
        return draft(
            self,
            msgs,
            session=session,
            user_text=user_text,
            preset=preset,
            params=params,
            options=options,
            characters=characters,
            speaker=speaker,
            group=group,
            mode=mode,
        )

    def preview(
        self,
        messages: Sequence[Message] | None = None,
        *,
        session: Session | str | None = None,
        user_text: str | None = None,
        preset: str | Character | None = None,
        params: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        characters: list[str] | None = None,
        speaker: str | None = None,
        group: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`draft` as the model would see it: the messages after context fitting, the templated prompt, its
        tokens, the persona, and which lore fired, why and where."""
        from .prompt_view import preview

        d = self.draft(
            messages,
            session=session,
            user_text=user_text,
            preset=preset,
            params=params,
            options=options,
            characters=characters,
            speaker=speaker,
            group=group,
        )
        return preview(self, d.messages, d.plan, d.params)

    def lore_activation(self, book: str, text: str) -> list[dict[str, Any]]:
        """Which entries of lorebook `book` fire for `text`, and why; nothing is generated. Each paragraph of
        `text` is one message, the last the newest."""
        from .chat_prompt import TokenCounter
        from .lore_form import test_activation

        books = [(book, self.lorebooks.get(book))]
        return test_activation(books, text, self.settings.lore, TokenCounter(self))

    # --- helpers shared by every interface ---------------------------------------------------------

    def character(self, name: str | None) -> Character | None:
        return self.presets.get(name) if name else None

    def params_for(
        self, character: Character | None, overrides: dict[str, Any] | None = None
    ) -> SamplingParams:
        """Config defaults, then the character's sampling, then the session's or request's values."""
        base = self.settings.generation.model_dump()
        if character:
            base.update(character.sampling)
        if overrides:
            base.update(overrides)
        params = parse_params(base)
        self._check_grammar(params.grammar)
        return params

    def check_sampling(self, sampling: dict[str, Any]) -> None:
        """Raise InvalidInput for sampling values (an imported chat's or card's) that a turn would refuse,
        so a bad grammar is refused where it comes in, not at first use."""
        self._check_grammar(parse_params({**self.settings.generation.model_dump(), **sampling}).grammar)

    def _check_grammar(self, grammar: str) -> None:
        """llama.cpp's own parser, in the worker. Without a model nothing can parse it: the turn will."""
        check = getattr(self.engine.backend, "check_grammar", None)
        if grammar and check is not None:
            with contextlib.suppress(ModelUnavailable):
                check(grammar)

    def secret(self, name: str) -> str:
        """A random key kept in <data_dir>/`name`, made on first use (with an unwritable data dir, a new one
        each call)."""
        from .fsutil import kept_secret

        return kept_secret(self.data_dir / name)

    # --- the model and the machine ------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        backend = self.engine.backend
        if backend is None:
            return {"loaded": False, "error": self.engine.load_error, "path": self.settings.model.path}
        info = {"loaded": True, **backend.model_info()}
        worker_status = getattr(backend, "worker_status", None)
        if worker_status is not None:
            info["worker"] = worker_status()
        return info

    def reasoning_tags(self) -> tuple[str, str]:
        """The loaded model's thinking tags (open, close), as its reasoning format writes them."""
        from .reasoning import FORMATS

        fmt = FORMATS.get(str(self.model_info().get("reasoning_format") or "think"), FORMATS["think"])
        return fmt.open, fmt.close

    def health(self) -> dict[str, Any]:
        backend = self.engine.backend
        remote = backend.health() if backend is not None else {"ok": False, "error": self.engine.load_error}
        ok = backend is not None and bool(remote.get("ok"))
        out: dict[str, Any] = {
            "status": "ok" if ok else "degraded",
            "model": self.model_info(),
            "backend": self.settings.backend.kind,
            "backend_health": remote,
            "gpu": gpu_summary(),
            "queue": len(self.engine.queue),
            "uptime_s": round(time.time() - self.started_at, 1),
        }
        worker = out["model"].pop("worker", None)
        if worker is not None:
            out["worker"] = worker
            if not ok and worker.get("reason"):
                out["reason"] = worker["reason"]
        return out

    def gpu_status(self) -> dict[str, Any]:
        """GPU devices, VRAM, use and processes, or why there is none (engine/gpu.py); never raises."""
        from .gpu import gpu_status

        return gpu_status()

    def gpu_refusal(self) -> str | None:
        """With gpu.required, one line saying why this process must not start (no usable GPU, nothing
        offloaded, the model not loaded) and how to fix it; None when the model runs on a GPU, or may not."""
        from .gpu_required import refusal

        return refusal(self)

    def start_refusal(self) -> str | None:
        """One line saying why this process must not start: `gpu_refusal`, or a config grammar that llama.cpp
        rejects (every turn would be refused); None when it may start."""
        refused = self.gpu_refusal()
        if refused:
            return refused
        try:
            self._check_grammar(self.settings.generation.grammar)
        except InvalidInput as exc:
            return f"generation.grammar in the config: {exc.message} Fix it or remove it."
        return None

    def process_memory(self) -> dict[str, float | None]:
        """This process's memory: rss_mb and peak_mb (None where the system does not say)."""
        from .sysinfo import process_memory

        return process_memory()

    # --- stores and services, made on first use --------------------------------------------------------

    def _member(self, name: str, make: Callable[[], Any]) -> Any:
        """The runtime's one `name`, made by `make` the first time it is asked for."""
        with self._members_lock:
            if name not in self._members:
                self._members[name] = make()
            return self._members[name]

    @property
    def personas(self) -> PersonaStore:
        """The user's personas (who {{user}} is), in <data_dir>/personas."""
        from .personas import PersonaStore

        return cast("PersonaStore", self._member("personas", lambda: PersonaStore(self.data_dir)))

    @property
    def lorebooks(self) -> LorebookStore:
        """The lorebooks (SillyTavern world info), in <data_dir>/lorebooks."""
        from .lore_store import LorebookStore

        return cast("LorebookStore", self._member("lorebooks", lambda: LorebookStore(self.data_dir)))

    @property
    def models(self) -> ModelManager:
        """The model files in models/: estimates, remembered settings, loading one, and downloads."""
        from .model_manager import ModelManager

        return cast("ModelManager", self._member("models", lambda: ModelManager(self)))

    @property
    def sampling_presets(self) -> SamplingPresetStore:
        """Sampling presets: the built-in ones and the user's (<data_dir>/sampling_presets.json)."""
        from .sampling_presets import SamplingPresetStore

        store = self._member("sampling_presets", lambda: SamplingPresetStore(self.data_dir))
        return cast("SamplingPresetStore", store)

    @property
    def process_history(self) -> ProcessHistory:
        """Recent CPU and memory samples of the server's and the model's processes, for a plot."""
        from .sysinfo import ProcessHistory

        return cast("ProcessHistory", self._member("process_history", ProcessHistory))

    @property
    def tools(self) -> ToolHub:
        """The MCP tool servers of config/mcp.json (tools.mcp_config): made and started on first use."""
        from .tools.attach import tool_hub

        return tool_hub(self)

    def close(self) -> None:
        from .tools.attach import close_tool_hub

        close_tool_hub(self)  # stops the MCP servers, if any were started
        self.engine.close()
