"""What the model gets for one turn: persona, lore, character and history, put together.

Every interface builds its prompt here (sessions in engine.conversation, stateless API calls, previews and
impersonation), so the preview shows exactly what a turn sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .characters import Character
from .errors import InvalidInput, NotFound
from .group_chat import group_system_prompt, name_history, speaker_line
from .lore_scan import Activation, ScanInput, Source, activate
from .lore_store import check_book_name
from .lorebook import character_book_of
from .personas import Persona
from .prompt import assemble, place, render_macros
from .template_rules import conform, rules_for

if TYPE_CHECKING:
    from .runtime import Runtime

Message = dict[str, Any]


@dataclass
class ChatOptions:
    """The per-chat choices a session remembers: who the user is, attached books, the reply's start."""

    persona: str | dict[str, str] | None = None
    lorebooks: list[str] = field(default_factory=list)
    reply_prefix: str = ""
    show_reply_prefix: bool = True


@dataclass
class PromptPlan:
    messages: list[Message]  # for the backend; ends with the reply prefix as an assistant message if any
    persona: Persona
    activation: Activation
    prefill: str = ""  # the reply prefix the model continues (already in `messages`)
    show_prefill: bool = True  # the reply, as shown and saved, starts with the prefix

    @property
    def lore(self) -> list[dict[str, Any]]:
        return [f.report() for f in self.activation.fired]


def check_options(rt: Runtime, options: ChatOptions) -> None:
    """Refuse unknown personas and books before anything is saved or generated."""
    if isinstance(options.persona, str):
        rt.personas.get(options.persona)
    elif isinstance(options.persona, dict):
        inline_persona(options.persona)
    if not isinstance(options.lorebooks, list) or len(options.lorebooks) > 50:
        raise InvalidInput("'lorebooks' must be a list of at most 50 lorebook names.", field="lorebooks")
    for name in options.lorebooks:
        check_book_name(name)
        if not rt.lorebooks.exists(name):
            raise NotFound(
                f"There is no lorebook named {name!r}. Import it first (POST /api/lorebooks/import)."
            )
    if not isinstance(options.reply_prefix, str) or len(options.reply_prefix) > 10_000:
        raise InvalidInput("'reply_prefix' must be text of at most 10000 characters.", field="reply_prefix")


def inline_persona(data: dict[str, Any]) -> Persona:
    return Persona.from_dict({k: v for k, v in data.items() if k in ("name", "description")}, "persona")


def resolve_persona(rt: Runtime, choice: str | dict[str, str] | None) -> Persona:
    """The chat's persona; a stored one that is gone falls back to the default, then to chat.user_name."""
    if isinstance(choice, dict):
        return inline_persona(choice)
    found = rt.personas.find(choice) if choice else None
    found = found or rt.personas.find(rt.personas.default_name())
    return found or Persona(name=rt.settings.chat.user_name)


def lore_sources(
    rt: Runtime, character: Character | None, names: list[str], warnings: list[str]
) -> list[Source]:
    sources: list[Source] = []
    if character is not None:
        try:
            book = character_book_of(character.card, character.display_name, character.display_name)
        except InvalidInput as exc:
            warnings.append(f"The character's lorebook was skipped: {exc.message}")
            book = None
        if book is not None:
            sources.append(Source(f"{character.display_name} (character)", book, character=True))
    for name in dict.fromkeys(names):
        try:
            sources.append(Source(name, rt.lorebooks.get(name)))
        except (NotFound, InvalidInput) as exc:
            warnings.append(f"Lorebook {name!r} was skipped: {exc.message}")
    return sources


def lore_seed(seed: int, history: list[Message]) -> int:
    """The turn's seed, or one derived from the history, so a preview and its turn roll the same."""
    if seed >= 0:
        return seed
    digest = hashlib.sha256("\x00".join(m.get("content", "") for m in history).encode("utf-8", "replace"))
    return int.from_bytes(digest.digest()[:8], "big")


class TokenCounter:
    """Tokens of a piece of text with the loaded model's tokenizer (cached), or an estimate without one."""

    def __init__(self, rt: Runtime) -> None:
        self.backend = rt.engine.backend
        self.cache: dict[str, int] = {}
        self.base: int | None = None

    def __call__(self, text: str) -> int:
        if text in self.cache:
            return self.cache[text]
        n = None
        if self.backend is not None:
            if self.base is None:
                self.base = self.backend.count_tokens([{"role": "user", "content": ""}])
            full = self.backend.count_tokens([{"role": "user", "content": text}])
            n = full - self.base if full is not None and self.base is not None else None
        self.cache[text] = n if n is not None else len(text.encode("utf-8")) // 4 + 1
        return self.cache[text]


@dataclass(frozen=True)
class GroupPrompt:
    """A group chat's part in a prompt: every member's card, and whether they are joined or swapped."""

    characters: list[Character]
    mode: Literal["join", "swap"] = "join"


def build_prompt(
    rt: Runtime,
    character: Character | None,
    history: list[Message],
    options: ChatOptions,
    *,
    system_prompt: str | None = None,
    mode: str = "normal",
    seed: int = -1,
    count: Callable[[str], int] | None = None,
    group: GroupPrompt | None = None,
) -> PromptPlan:
    """Messages for `history` (oldest first; a trailing assistant message is a reply being continued).
    In a group chat `character` is the speaker, and `group` has the members and how the cards go in."""
    persona = resolve_persona(rt, options.persona)
    char_name = character.display_name if character else rt.settings.chat.assistant_name
    user_name = persona.name

    def render(text: str) -> str:
        return render_macros(text, char_name, user_name)

    warnings: list[str] = []
    sources = lore_sources(rt, character, options.lorebooks, warnings)
    activation = Activation()
    if sources:
        backend = rt.engine.backend
        n_ctx = (backend.context_size() if backend is not None else None) or rt.settings.model.n_ctx
        scan = ScanInput(
            messages=scan_messages(history, user_name, char_name, group),
            render=render,
            extra_text=_scan_text(character, render(persona.description)),
            trigger=mode,
            character_names=(character.name, character.display_name) if character else (),
            context_size=n_ctx,
            seed=lore_seed(seed, history),
        )
        activation = activate(sources, scan, rt.settings.lore, count or TokenCounter(rt))
    activation.warnings[:0] = warnings
    ps = rt.settings.persona
    placed = place(activation.fired, render(persona.description), (ps.position, ps.depth, ps.role))
    continuing = bool(history) and history[-1]["role"] == "assistant" and mode == "continue"
    rules = rules_for(rt.engine.backend)
    system = None
    if group is not None and character is not None:
        system = group_system_prompt(
            group.characters,
            character.name,
            group.mode,
            system_prompt=system_prompt,
            default_system_prompt=rt.settings.chat.system_prompt,
            user_name=user_name,
            placed=placed,
        )
        display = {c.name: c.display_name for c in group.characters}
        history = name_history(history, display)
    messages = assemble(
        character,
        history,
        system=system,
        system_prompt=system_prompt,
        default_system_prompt=rt.settings.chat.system_prompt,
        user_name=user_name,
        assistant_name=rt.settings.chat.assistant_name,
        placed=placed,
        continuing=continuing,
        rules=rules,
    )
    after_reply = bool(history) and history[-1]["role"] == "assistant" and mode == "normal"
    if group is not None and character is not None and after_reply:
        # a member speaks after another ("Speak now"): a last turn names who, or the backend would
        # continue the last reply (SillyTavern's group nudge does the same)
        nudge = f"[{speaker_line(character.display_name)}]"
        messages.append({"role": "system" if rules.lenient else "user", "content": nudge})
    prefill = ""
    if mode == "impersonate":
        messages.append({"role": "system", "content": render(rt.settings.chat.impersonate_prompt)})
        messages = conform(messages, rules)
    elif options.reply_prefix and not continuing:
        prefill = render(options.reply_prefix)
        messages.append({"role": "assistant", "content": prefill})
    return PromptPlan(messages, persona, activation, prefill, options.show_reply_prefix)


def scan_messages(
    history: list[Message], user_name: str, char_name: str, group: GroupPrompt | None
) -> list[tuple[str, str]]:
    """(speaker, text) of each message for the lore scan: the user's persona name, and each reply its own
    speaker's name (a group chat's past replies are not all the current speaker's)."""
    display = {c.name: c.display_name for c in group.characters} if group is not None else {}
    out = []
    for m in history:
        name = m.get("name") if m["role"] == "assistant" else None
        speaker = user_name if m["role"] == "user" else display.get(name, name) if name else char_name
        out.append((str(speaker), str(m.get("content") or "")))
    return out


def _scan_text(character: Character | None, persona_description: str) -> dict[str, str]:
    out = {"persona_description": persona_description}
    if character is not None:
        out.update(
            character_description=character.description,
            character_personality=character.personality,
            scenario=character.scenario,
            creator_notes=character.creator_notes,
        )
    return out
