"""Characters (presets): the model and its YAML form. The folder of presets is engine.preset_store;
card import/export is engine.cards."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidInput
from .params import PARAM_NAMES, parse_params
from .text import clean_line

MAX_FILE_BYTES = 10 * 1024 * 1024
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_RULE = "1-64 characters, only letters A-Z a-z, digits, '_' and '-'"
AVATAR_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
MAX_NESTING = 100
SEEDED_FILE = ".seeded.json"

TEXT_FIELDS = (
    "title",
    "description",
    "personality",
    "scenario",
    "system_prompt",
    "greeting",
    "example_dialogue",
    "post_history_instructions",
    "creator_notes",
)


class Character(BaseModel):
    """A character or assistant preset. `title` is the display name that {{char}} renders to."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="File stem and id: " + NAME_RULE + ".")
    title: str = Field(default="", description="Display name; {{char}} renders to it. Empty means `name`.")
    description: str = ""
    personality: str = ""
    scenario: str = ""
    system_prompt: str = Field(
        default="", description="Replaces the default system prompt; {{original}} inserts it."
    )
    greeting: str = Field(default="", description="The character's first message.")
    alternate_greetings: list[str] = Field(default_factory=list)
    example_dialogue: str = Field(
        default="", description="Example turns; separate conversations with <START>."
    )
    post_history_instructions: str = Field(default="", description="A system note placed after the history.")
    creator_notes: str = Field(default="", description="Notes for people; never sent to the model.")
    sampling: dict[str, Any] = Field(default_factory=dict, description="Sampling parameter overrides.")
    tags: list[str] = Field(default_factory=list)
    avatar: str | None = Field(default=None, description="File name of an image next to the YAML file.")
    card: dict[str, Any] = Field(
        default_factory=dict,
        description="What an imported card held that has no field here, kept for export.",
    )

    @field_validator(*TEXT_FIELDS, mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("alternate_greetings", "tags", mode="before")
    @classmethod
    def _none_is_empty_list(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("sampling", "card", mode="before")
    @classmethod
    def _none_is_empty_dict(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("title")
    @classmethod
    def _one_clean_line(cls, v: str) -> str:
        return clean_line(v)  # no control characters or bidi overrides in a name shown everywhere

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        check_name(v, exc=ValueError)
        return v

    @field_validator("sampling")
    @classmethod
    def _valid_sampling(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            return check_sampling(v)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @field_validator("avatar")
    @classmethod
    def _valid_avatar(cls, v: str | None) -> str | None:
        if not v:
            return None
        if (
            not NAME_RE.fullmatch(Path(v).stem)
            or Path(v).name != v
            or Path(v).suffix.lower() not in AVATAR_EXTS
        ):
            raise ValueError(
                f"must be the file name of an image next to the preset ({', '.join(AVATAR_EXTS)})"
            )
        return v

    @field_validator("card")
    @classmethod
    def _valid_card(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_json_value(v, "card", exc=ValueError)
        for key, value in v.items():
            if key not in ("top", "data") or not isinstance(value, dict):
                raise ValueError(
                    "card may only hold the mappings 'top' and 'data' (kept from an imported card)"
                )
        return v

    # The fields of a character editor's form, as text (engine/character_form.py; `to_form`, `from_form`).
    form_fields: ClassVar[tuple[str, ...]] = ("name", *TEXT_FIELDS, "alternate_greetings", "tags", "sampling")

    @property
    def display_name(self) -> str:
        return self.title or self.name

    def greetings(self, user_name: str = "User") -> list[str]:
        """The greeting, then the alternate greetings, with {{char}} and {{user}} rendered; empty ones left
        out."""
        from .prompt import greetings

        return greetings(self, user_name)

    def to_form(self) -> dict[str, str]:
        """Every `form_fields` entry as text: greetings split by `---` lines, tags by commas, sampling as
        YAML."""
        from .character_form import form_from_character

        return form_from_character(self)

    @classmethod
    def from_form(cls, fields: dict[str, Any], base: Character | None = None) -> Character:
        """A character from an editor's text fields (`to_form`'s shape); `base` supplies what a form does not
        show (avatar, card data). Raises InvalidInput naming the field."""
        from .character_form import character_from_form

        return character_from_form(fields, base)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "preset") -> Character:
        """Validate `data`, raising InvalidInput that names the bad field and says what was expected."""
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: expected a mapping of character fields, got {type_name(data)}.")
        if isinstance(data.get("sampling"), dict):  # first, so the message names the parameter
            try:
                check_sampling(data["sampling"])
            except InvalidInput as exc:
                raise InvalidInput(f"{source}: {exc.message}", field=exc.field) from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_character(exc, source) from None


def check_sampling(overrides: dict[str, Any]) -> dict[str, Any]:
    """Validate sampling overrides against SamplingParams; return them normalised, in the user's order."""
    unknown = [str(k) for k in overrides if k not in PARAM_NAMES]
    if unknown:
        raise InvalidInput(
            f"Unknown sampling parameter(s): {', '.join(unknown)}. Known: {', '.join(PARAM_NAMES)}.",
            field="sampling",
        )
    try:
        parsed = parse_params(overrides).model_dump()
    except InvalidInput as exc:
        field = (exc.field or "params").replace("params", "sampling", 1)
        raise InvalidInput(exc.message.replace("'params.", "'sampling."), field=field) from None
    return {k: parsed[k] for k in overrides}


def invalid_character(exc: ValidationError, source: str) -> InvalidInput:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "character"
    if err.get("type") == "extra_forbidden":
        known = ", ".join(Character.model_fields)
        return InvalidInput(f"{source}: unknown field '{field}'. Known fields: {known}.", field=field)
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ").rstrip(".")
    return InvalidInput(f"{source}: invalid '{field}': {msg}.", field=field)


def check_name(name: Any, *, exc: type[Exception] = InvalidInput) -> str:
    """A preset name is used as a file stem, so it must never be able to leave its folder."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name)[:80]
        raise exc(f"{shown} is not a valid preset name: use {NAME_RULE}")
    return name


def safe_name(text: str, fallback: str = "character") -> str:
    """A valid preset name made from free text ("Séraphine Dubois" -> "Seraphine_Dubois")."""
    ascii_text = unicodedata.normalize("NFKD", clean_line(text)).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text).strip("_-")[:56].strip("_-")
    return name or fallback


def type_name(v: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(v), "a number" if isinstance(v, int | float) else type(v).__name__)


def check_json_value(value: Any, where: str = "", *, exc: type[Exception] = InvalidInput) -> None:
    """Only plain JSON values (text keys, finite numbers, valid Unicode), at most MAX_NESTING levels deep.

    `where` names the value in messages ("card" -> "card.data.x ..."); empty means a top-level object.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        v, path, depth = stack.pop()
        shown = f"'{path}'" if path else "the value"
        if depth > MAX_NESTING:
            raise exc(f"{shown} is nested too deeply (more than {MAX_NESTING} levels)")
        if isinstance(v, str):
            _check_text(v, shown, exc)
        elif isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise exc(f"{shown} must be a finite number")
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise exc(f"{shown} has a key that is not text: {k!r:.40}")
                _check_text(k, shown, exc)
                stack.append((item, f"{path}.{k}" if path else k, depth + 1))
        elif isinstance(v, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(v))
        elif v is not None and not isinstance(v, bool | int):
            raise exc(f"{shown} holds {type_name(v)}, which is not a JSON value")


def _check_text(s: str, path: str, exc: type[Exception]) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise exc(f"{path} contains invalid Unicode (an unpaired surrogate)") from None


# --- YAML ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML without aliases (no "billion laughs"); dates stay text."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not supported", event.start_mark
            )
        return super().compose_node(parent, index)


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


class _Dumper(yaml.SafeDumper):
    pass


_ODD_BREAKS = re.compile("[\r\x85\u2028\u2029]")


def _represent_str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
    # Block style keeps multi-line prompts readable (PyYAML falls back to quotes where it can't be exact).
    # Line breaks other than \n would be normalised by a YAML reader, so those strings get escaped quotes.
    style = '"' if _ODD_BREAKS.search(s) else "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _represent_str)


def load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidInput(f"{source}: not valid YAML{where}: {exc.problem or exc}.") from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise InvalidInput(f"{source}: not valid YAML: {str(exc)[:200] or 'nested too deeply'}.") from None


def character_to_yaml(character: Character) -> bytes:
    data = character.model_dump(exclude_defaults=True)
    data = {"name": character.name, "title": character.title, **data}
    text = yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=4096)
    return text.encode("utf-8")


def character_from_yaml(data: bytes, name: str, source: str | None = None) -> Character:
    """Parse a preset file; the file stem is the name, whatever the file says."""
    source = source or f"{name}.yaml"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source}: not UTF-8 text (bad byte at offset {exc.start}).") from None
    obj = load_yaml(text, source)
    if not isinstance(obj, dict):
        raise InvalidInput(f"{source}: expected a mapping of character fields, got {type_name(obj)}.")
    return Character.from_dict({**obj, "name": name}, source=source)


# --- the store ----------------------------------------------------------------------------------------
