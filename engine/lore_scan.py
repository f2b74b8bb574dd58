"""Lorebook activation: which entries go into this turn's prompt, and why. SillyTavern's algorithm:

1. Entries are sorted: the character's book and the attached books by the configured strategy, each by
   insertion order (highest first).
2. Each pass scans the last `scan_depth` messages (as "Name: text", newest first), plus, after the first
   pass, the content of the entries activated so far (recursion). An entry fires when it is constant, or
   a primary key matches and its secondary keys satisfy its logic (AND ANY, NOT ALL, NOT ANY, AND ALL).
3. Of the entries found in a pass, constant ones come first, then the sorted order. Inclusion groups keep
   one winner each; then each entry rolls its probability (from the turn's seed) and is added until the
   token budget is spent.
4. Another pass runs while new entries can recurse (`preventRecursion` stops an entry's content from
   activating others; `excludeRecursion` keeps an entry from being activated by others).

A card's character_book may also set, for its own entries: `token_budget` (a cap on the tokens of that
book's entries, within the overall budget), `recursive_scanning: false` (its entries neither activate
others nor are activated by recursion), and per entry the V3 `use_regex` (keys are regular expressions).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import LoreSettings
from .lore_keys import KeyTimeout, match_key
from .lorebook import CARD_ENTRY_KEY, DEFAULT_DEPTH, DEFAULT_WEIGHT, LOGIC, POSITIONS, ROLES, Book, Entry

MAX_SCAN_DEPTH = 1000
MATCHER, JOINER = "\x01", "\n\x01"
KNOWN_DECORATORS = ("@@activate", "@@dont_activate")
SOURCE_FLAGS = {  # entry flag -> key of ScanInput.extra_text
    "matchPersonaDescription": "persona_description",
    "matchCharacterDescription": "character_description",
    "matchCharacterPersonality": "character_personality",
    "matchCharacterDepthPrompt": "character_depth_prompt",
    "matchScenario": "scenario",
    "matchCreatorNotes": "creator_notes",
}
INITIAL, RECURSION = 1, 2


@dataclass(frozen=True)
class Source:
    """A book taking part in this turn: the character's own, or one attached to the chat."""

    name: str
    book: Book
    character: bool = False


@dataclass
class ScanInput:
    messages: list[tuple[str, str]]  # (speaker, text), oldest first
    render: Callable[[str], str] = lambda s: s  # {{char}}/{{user}} macros
    extra_text: dict[str, str] = field(default_factory=dict)  # persona_description, scenario, ...
    trigger: str = "normal"  # normal, continue, impersonate, swipe, regenerate, quiet
    character_names: tuple[str, ...] = ()  # for entries' characterFilter
    context_size: int = 4096
    seed: int = 0


@dataclass
class Fired:
    """An activated entry, ready to be placed."""

    book: str
    uid: int
    comment: str
    why: str  # the key that matched, "constant", "recursion" or "decorator"
    detail: str
    content: str
    position: int
    depth: int
    role: str
    order: float
    outlet: str = ""

    @property
    def where(self) -> str:
        name = POSITIONS.get(self.position, f"position {self.position}")
        if self.position == 4:
            return f"at depth {self.depth} as {self.role}"
        return f"outlet {self.outlet!r}" if self.position == 7 else name

    def report(self) -> dict[str, Any]:
        return {
            "book": self.book,
            "uid": self.uid,
            "comment": self.comment,
            "why": self.why,
            "detail": self.detail,
            "where": self.where,
            "order": self.order,
        }


@dataclass
class Activation:
    fired: list[Fired] = field(default_factory=list)
    budget: int = 0
    tokens: int = 0
    overflowed: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Cand:
    source: Source
    entry: Entry
    content: str
    decorators: list[str]
    index: int = 0

    @property
    def order(self) -> float:
        return float(self.entry.order if self.entry.order is not None else 100)


def activate(
    sources: Iterable[Source],
    scan: ScanInput,
    settings: LoreSettings,
    count_tokens: Callable[[str], int],
) -> Activation:
    return _Scanner(list(sources), scan, settings, count_tokens).run()


class _Scanner:
    def __init__(
        self, sources: list[Source], scan: ScanInput, settings: LoreSettings, count: Callable[[str], int]
    ) -> None:
        self.scan, self.settings, self.count = scan, settings, count
        self.rng = random.Random(scan.seed)
        self.cands = sorted_candidates(sources, settings.strategy)
        for cand in self.cands:  # macros in content are rendered once, before scanning and counting
            cand.content = scan.render(cand.content)
        names = [
            f"{name}: {text}" if settings.include_names and name else text for name, text in scan.messages
        ]
        self.chat = [m.strip() for m in reversed(names)][:MAX_SCAN_DEPTH]  # newest first
        self.recurse: list[str] = []
        self.result = Activation()
        self._timed_out: set[str] = set()

    # --- the passes ----------------------------------------------------------------------------------

    def run(self) -> Activation:
        s, out = self.settings, self.result
        budget = round(s.budget_percent * self.scan.context_size / 100) or 1
        if s.budget_tokens and budget > s.budget_tokens:
            budget = s.budget_tokens
        out.budget = budget
        book_tokens: dict[str, int] = {}  # tokens placed per book, for a book's own token_budget
        levels = sorted({_delay_level(c.entry) for c in self.cands if _delay_level(c.entry)})
        level = levels.pop(0) if levels else 0
        done: set[int] = set()  # ids of activated or failed candidates
        state, steps = INITIAL, 0
        while state:
            if s.max_recursion_steps and steps >= s.max_recursion_steps:
                break
            steps += 1
            found = [
                (c, why)
                for c in self.cands
                if id(c) not in done
                for why in [self._check(c, state, level)]
                if why
            ]
            found.sort(key=lambda f: (not f[0].entry.constant, f[0].index))
            found = self._groups(found)
            recursable: list[str] = []
            for cand, (why, detail) in found:
                if not self._roll(cand.entry):
                    done.add(id(cand))
                    continue
                tokens = self.count(cand.content + "\n")
                if not self._fits_book(cand.source, book_tokens, tokens):
                    done.add(id(cand))  # its book's own budget is spent; other books go on
                    continue
                if out.tokens + tokens >= budget:
                    out.overflowed = True
                    out.warnings.append(
                        f"The lore budget ({budget} tokens) is spent: lower-priority entries were left out."
                    )
                    break
                out.tokens += tokens
                book_tokens[cand.source.name] = book_tokens.get(cand.source.name, 0) + tokens
                done.add(id(cand))
                out.fired.append(self._fired(cand, why, detail, state))
                if not cand.entry.preventRecursion and cand.source.book.recursive_scanning is not False:
                    recursable.append(cand.content)
            state = RECURSION if s.recursive and not out.overflowed and recursable else 0
            if not state and levels and not out.overflowed:
                state, level = RECURSION, levels.pop(0)
            if state and recursable:
                self.recurse.append("\n".join(recursable))
        return out

    def _fits_book(self, source: Source, used: dict[str, int], tokens: int) -> bool:
        """Whether an entry of `source` fits the book's own `token_budget` (a card's character_book may
        set one; 0 or none: no cap of its own). Warns once per book when it does not."""
        cap = source.book.token_budget
        if not cap or used.get(source.name, 0) + tokens <= cap:
            return True
        message = f"The lorebook {source.name!r} reached its own token budget ({cap} tokens): its "
        message += "lower-priority entries were left out."
        if message not in self.result.warnings:
            self.result.warnings.append(message)
        return False

    def _fired(self, cand: _Cand, why: str, detail: str, state: int) -> Fired:
        e = cand.entry
        if state == RECURSION and why not in ("constant", "decorator"):
            chat_only = self._buffer(e, cand.source, recursion=False)
            if not self._match(chat_only, why, e):
                why, detail = "recursion", f"{detail}, found in the content of entries activated before"
        return Fired(
            book=cand.source.name,
            uid=e.uid,
            comment=e.comment,
            why=why,
            detail=detail,
            content=cand.content,
            position=e.position if e.position is not None else 0,
            depth=e.depth if e.depth is not None else DEFAULT_DEPTH,
            role=ROLES.get(e.role if e.role is not None else 0, "system"),
            order=cand.order,
            outlet=str(e.extra_fields().get("outletName") or ""),
        )

    # --- one entry -------------------------------------------------------------------------------------

    def _check(self, cand: _Cand, state: int, level: int) -> tuple[str, str] | None:
        """(why, detail) when the entry activates in this pass, else None."""
        e, extra = cand.entry, cand.entry.extra_fields()
        if e.disable or not self._for_character(extra.get("characterFilter")):
            return None
        triggers = extra.get("triggers")
        if isinstance(triggers, list) and triggers and self.scan.trigger not in triggers:
            return None
        if isinstance(e.delay, int) and e.delay > 0 and len(self.scan.messages) < e.delay:
            return None
        delay_level = _delay_level(e)
        if delay_level and (state != RECURSION or delay_level > level):
            return None
        if state == RECURSION and self.settings.recursive and e.excludeRecursion:
            return None
        if state == RECURSION and cand.source.book.recursive_scanning is False:
            return None  # a book with recursive_scanning false: its entries fire from the chat only
        if "@@activate" in cand.decorators:
            return "decorator", "@@activate"
        if "@@dont_activate" in cand.decorators:
            return None
        if e.constant:
            return "constant", "constant entry"
        text = self._buffer(e, cand.source)
        primary = next((k for k in self._keys(e.key) if self._match(text, k, e)), None)
        if primary is None:
            return None
        secondary = self._keys(e.keysecondary) if e.selective else []
        if not secondary:
            return primary, f"key {primary!r}"
        logic = e.selectiveLogic or 0
        hits = [self._match(text, k, e) for k in secondary]
        ok = {0: any(hits), 1: not all(hits), 2: not any(hits), 3: all(hits)}[logic]
        if not ok:
            return None
        shown = ", ".join(repr(k) for k, hit in zip(secondary, hits, strict=True) if hit == (logic in (0, 3)))
        return primary, f"key {primary!r}, {LOGIC[logic]} {shown or repr(secondary)}"

    def _keys(self, keys: list[str]) -> list[str]:
        return [k for k in (self.scan.render(key).strip() for key in keys) if k]

    def _match(self, text: str, key: str, e: Entry) -> bool:
        s = self.settings
        case = e.caseSensitive if e.caseSensitive is not None else s.case_sensitive
        whole = e.matchWholeWords if e.matchWholeWords is not None else s.match_whole_words
        try:
            return match_key(
                text,
                key,
                case_sensitive=case,
                whole_words=whole,
                timeout=s.regex_timeout_s,
                as_regex=_regex(e),
            )
        except KeyTimeout:
            if key not in self._timed_out:
                self._timed_out.add(key)
                self.result.warnings.append(f"The regex key {key[:60]!r} took too long and was skipped.")
            return False

    def _buffer(self, e: Entry, source: Source, *, recursion: bool = True) -> str:
        depth = e.scanDepth if e.scanDepth is not None else source.book.scan_depth
        depth = min(MAX_SCAN_DEPTH, depth if depth is not None else self.settings.scan_depth)
        text = MATCHER + JOINER.join(self.chat[:depth]) if depth > 0 else ""
        extra = e.extra_fields()
        for flag, key in SOURCE_FLAGS.items():
            value = self.scan.extra_text.get(key)
            if extra.get(flag) is True and value:
                text += JOINER + value
        if self.recurse and recursion:
            text += JOINER + JOINER.join(self.recurse)
        return text

    def _for_character(self, flt: Any) -> bool:
        if not isinstance(flt, dict) or not isinstance(flt.get("names"), list) or not flt["names"]:
            return True
        listed = {str(n) for n in flt["names"]} & set(self.scan.character_names)
        return not listed if flt.get("isExclude") else bool(listed)

    def _roll(self, e: Entry) -> bool:
        p = 100 if e.probability is None else e.probability
        if not e.useProbability or p >= 100:
            return True
        return self.rng.random() * 100 <= p

    # --- inclusion groups ----------------------------------------------------------------------------

    def _groups(self, found: list[tuple[_Cand, Any]]) -> list[tuple[_Cand, Any]]:
        groups: dict[str, list[_Cand]] = {}
        for cand, _ in found:
            for g in cand.entry.groups():
                groups.setdefault(g, []).append(cand)
        if not groups:
            return found
        removed: set[int] = set()
        fired_groups = {g for f in self.result.fired for g in self._groups_of(f)}
        for name, members in groups.items():
            scored = self._by_score(members)
            removed.update(id(m) for m in members if m not in scored)
            members = scored
            if name in fired_groups:
                removed.update(id(m) for m in members)  # the group already has its winner
                continue
            if len(members) <= 1:
                continue
            prio = sorted((m for m in members if m.entry.groupOverride), key=lambda m: -m.order)
            winner = prio[0] if prio else self._weighted(members)
            removed.update(id(m) for m in members if m is not winner)
        return [f for f in found if id(f[0]) not in removed]

    def _groups_of(self, fired: Fired) -> list[str]:
        cand = next((c for c in self.cands if c.source.name == fired.book and c.entry.uid == fired.uid), None)
        return cand.entry.groups() if cand else []

    def _by_score(self, members: list[_Cand]) -> list[_Cand]:
        default = self.settings.group_scoring
        if not default and not any(m.entry.useGroupScoring for m in members):
            return members
        scores = [self._score(m) for m in members]
        best = max(scores)
        return [
            m
            for m, score in zip(members, scores, strict=True)
            if score >= best
            or not (m.entry.useGroupScoring if m.entry.useGroupScoring is not None else default)
        ]

    def _score(self, cand: _Cand) -> int:
        e = cand.entry
        text = self._buffer(e, cand.source)
        primary = sum(self._match(text, k, e) for k in self._keys(e.key))
        secondary = self._keys(e.keysecondary)
        hits = sum(self._match(text, k, e) for k in secondary)
        logic = e.selectiveLogic or 0
        if logic == 0 or (logic == 3 and hits == len(secondary)):
            return primary + hits
        return primary

    def _weighted(self, members: list[_Cand]) -> _Cand | None:
        weights = [
            float(m.entry.groupWeight if m.entry.groupWeight is not None else DEFAULT_WEIGHT) for m in members
        ]
        roll = self.rng.random() * sum(weights)
        total = 0.0
        for m, w in zip(members, weights, strict=True):
            total += w
            if roll <= total:
                return m
        return None


def _regex(e: Entry) -> bool:
    """A Character Card V3 entry with `use_regex: true`: its keys are regular expressions as written."""
    card = e.extra_fields().get(CARD_ENTRY_KEY)
    return isinstance(card, dict) and card.get("use_regex") is True


def _delay_level(e: Entry) -> int:
    v = e.delayUntilRecursion
    if v is True:
        return 1
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def parse_decorators(content: str) -> tuple[list[str], str]:
    """Leading `@@decorator` lines: the known ones, and the content without them."""
    if not content.startswith("@@"):
        return [], content
    lines = content.split("\n")
    found: list[str] = []
    fallback = False
    for i, line in enumerate(lines):
        if not line.startswith("@@"):
            return found, "\n".join(lines[i:])
        if line.startswith("@@@") and not fallback:
            continue
        name = line[1:] if line.startswith("@@@") else line
        if name.startswith(KNOWN_DECORATORS):
            found.append(name)
            fallback = False
        else:
            fallback = True
    return found, content


def _js_key_order(keys: list[str]) -> list[str]:
    """Object keys in JavaScript's iteration order: array-index keys ascending, then the rest as written."""
    index = [k for k in keys if k.isdecimal() and str(int(k)) == k and int(k) < 2**32 - 1]
    rest = [k for k in keys if k not in set(index)]
    return sorted(index, key=int) + rest


def sorted_candidates(sources: list[Source], strategy: str) -> list[_Cand]:
    def of(src: Source) -> list[_Cand]:
        out = []
        for k in _js_key_order(list(src.book.entries)):
            e = src.book.entries[k]
            decorators, content = parse_decorators(e.content or "")
            out.append(_Cand(src, e, content, decorators))
        return sorted(out, key=lambda c: -c.order)  # stable, like JavaScript's sort

    chars = [c for s in sources if s.character for c in of(s)]
    attached = [c for s in sources if not s.character for c in of(s)]
    if strategy == "character_first":
        cands = chars + attached
    elif strategy == "global_first":
        cands = attached + chars
    else:
        cands = sorted(attached + chars, key=lambda c: -c.order)
    for i, c in enumerate(cands):
        c.index = i
    return cands
