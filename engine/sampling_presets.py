"""Sampling presets: three built-in ones plus the user's, kept in <data_dir>/sampling_presets.json.

Also here: example GBNF grammars, and where each effective sampling value comes from (config default,
character, session), so every interface can explain a chat's settings the same way.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from .errors import InvalidInput, NotFound
from .fsutil import atomic_write
from .params import PARAM_NAMES, SamplingParams, parse_params

FILE_NAME = "sampling_presets.json"
NAME_MAX = 64

BUILTIN: dict[str, dict[str, Any]] = {
    "Precise": {"temperature": 0.2, "top_p": 0.9, "top_k": 20, "min_p": 0.1, "repeat_penalty": 1.05},
    "Balanced": {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1},
    "Creative": {"temperature": 1.1, "top_p": 0.98, "top_k": 100, "min_p": 0.02, "repeat_penalty": 1.15},
}

GRAMMARS: dict[str, str] = {
    "JSON object": r"""root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]*)) ("." [0-9]+)? ([eE] [-+]? [0-9]+)? ws
ws     ::= [ \t\n]{0,20}
""",
    "Yes / no": 'root ::= ("yes" | "no")\n',
    "Bulleted list": 'root ::= item+\nitem ::= "- " [^\\n]+ "\\n"\n',
}

Source = str  # "default" | "config" | "character" | "session"


def check_preset_name(name: Any) -> str:
    """A preset name: 1-64 printable characters, not only spaces, not a built-in name."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("Give the sampling preset a name.", field="name")
    name = " ".join(name.split())
    if len(name) > NAME_MAX or not name.isprintable():
        raise InvalidInput(f"A preset name is at most {NAME_MAX} printable characters.", field="name")
    if name.casefold() in (b.casefold() for b in BUILTIN):
        raise InvalidInput(f"'{name}' is a built-in preset; pick another name.", field="name")
    return name


class SamplingPresetStore:
    """User presets as {name: {param: value}} in one JSON file, written atomically."""

    grammars = GRAMMARS  # example GBNF grammars, by title

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Built-in presets first, then the user's, by name."""
        return [*BUILTIN, *sorted(self._read(), key=str.casefold)]

    def get(self, name: str) -> dict[str, Any]:
        """The preset's values (only the parameters it sets)."""
        if name in BUILTIN:
            return dict(BUILTIN[name])
        found = self._read().get(name)
        if found is None:
            raise NotFound(f"There is no sampling preset named '{name}'.")
        return dict(found)

    def is_builtin(self, name: str) -> bool:
        return name in BUILTIN

    def save(self, name: str, values: dict[str, Any]) -> str:
        """Validate and store `values` under `name`, replacing a user preset of that name."""
        name = check_preset_name(name)
        parsed = parse_params(values).model_dump()
        clean = {k: parsed[k] for k in values}
        with self._lock:
            data = self._read()
            data[name] = clean
            self._write(data)
        return name

    def delete(self, name: str) -> None:
        if name in BUILTIN:
            raise InvalidInput(f"'{name}' is built in and cannot be deleted.")
        with self._lock:
            data = self._read()
            if name not in data:
                raise NotFound(f"There is no sampling preset named '{name}'.")
            del data[name]
            self._write(data)

    def _read(self) -> dict[str, dict[str, Any]]:
        """The user's presets; a damaged file or entry is reported in `problems` and skipped."""
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.problems.append(
                f"{FILE_NAME} could not be read ({exc}); saving a "
                f"preset replaces it (the old file is kept as .bak)."
            )
            return {}
        if not isinstance(raw, dict):
            self.problems.append(f"{FILE_NAME} is not a JSON object; its presets were skipped.")
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name, values in raw.items():
            try:
                parsed = parse_params(values).model_dump()
                out[str(name)] = {k: parsed[k] for k in values}
            except InvalidInput as exc:
                self.problems.append(f"Sampling preset '{name}' was skipped: {exc.message}")
        return out

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        body = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
        atomic_write(self.path, body)

    def pop_problems(self) -> list[str]:
        out, self.problems = self.problems, []
        return out


def param_sources(
    config: SamplingParams, character: dict[str, Any] | None, session: dict[str, Any] | None
) -> list[tuple[str, Any, Source]]:
    """(name, effective value, where it came from) for every parameter, in SamplingParams order.

    The session wins, then the character's sampling, then the config file; "default" means built in.
    """
    character, session = character or {}, session or {}
    merged = parse_params({**config.model_dump(), **character, **session}).model_dump()
    rows = []
    for name in PARAM_NAMES:
        if name in session and not (name in character and character[name] == session[name]):
            source = "session"
        elif name in character:
            source = "character"
        elif name in config.model_fields_set:
            source = "config"
        else:
            source = "default"
        rows.append((name, merged[name], source))
    return rows


def session_overrides(
    config: SamplingParams, character: dict[str, Any] | None, values: dict[str, Any]
) -> dict[str, Any]:
    """What a session must store so that config + character + it gives `values` (validated first).

    The character's own values are kept too, as engine.conversation.new_session stores them.
    """
    character = character or {}
    wanted = parse_params({**config.model_dump(), **character, **values}).model_dump()
    base = {**config.model_dump(), **character}
    out = {k: wanted[k] for k in character}
    out.update({k: v for k, v in wanted.items() if base.get(k) != v})
    return out
