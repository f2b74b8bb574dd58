"""YAML config -> validated settings. Seed-system keys load unchanged; env vars override the file.

Env overrides: LLM_<SECTION>__<KEY>=value, e.g. LLM_MODEL__N_CTX=2048 or LLM_GPU__REQUIRED=true, read by
pydantic-settings: a value takes its field's type ("true", "2048", "0.5"); a list is JSON
(LLM_TOOLS__APPROVAL='["get_time"]'); "null" is None. The file, then the environment, then the command
line's flags: each later layer wins.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .errors import ConfigError
from .params import SamplingParams

log = logging.getLogger("engine.config")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "model_config.yaml"
DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_PREFIX = "LLM_"

KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    path: str = Field(DEFAULT_MODEL, description="GGUF file; relative paths resolve from the project folder.")
    n_ctx: int = Field(
        4096,
        ge=256,
        le=1_048_576,
        description="Context window in tokens; long chats drop their oldest turns to fit (the system prompt "
        "and the last turn are kept, and the UI says so).",
    )
    n_gpu_layers: int = Field(
        -1, ge=-1, le=10_000, description="Layers to offload to the GPU; -1 = all, 0 = the CPU only."
    )
    n_batch: int = Field(512, ge=1, le=65_536, description="Prompt tokens evaluated per batch.")
    n_threads: int | None = Field(None, ge=1, le=512, description="Decode threads; empty = all cores.")
    use_mmap: bool = Field(True, description="Map the model file into memory instead of reading it.")
    use_mlock: bool = Field(False, description="Lock the model in RAM so the OS never swaps it out.")
    flash_attn: bool = Field(
        True,
        description="Flash attention: less KV memory, faster on GPUs, and on the CPU a batch of chats "
        "skips the other chats' KV cells (llama.cpp's own default turns it on too).",
    )
    kv_types: ClassVar[tuple[str, ...]] = KV_TYPES  # what cache_type_k and cache_type_v take
    cache_type_k: str = Field("f16", pattern="^(" + "|".join(KV_TYPES) + ")$", description="KV cache type.")
    cache_type_v: str = Field("f16", pattern="^(" + "|".join(KV_TYPES) + ")$", description="KV cache type.")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="The context's seed; -1 picks one at load.")
    chat_format: str | None = Field(None, description="Override the GGUF's chat template (llama-cpp name).")
    parallel: int = Field(
        4,
        ge=1,
        le=64,
        description="Chats decoded at once (continuous batching), each in a KV slot of its own; 1 serves one "
        "reply at a time.",
    )
    kv_unified: bool = Field(
        True,
        description="One KV cache of n_ctx cells that the slots share (a chat may use all of it). false "
        "gives each slot a cache of its own of n_ctx cells, as llama-server -np does: parallel times the "
        "memory, and no chat attends over another's cells or is cleared to make room for another.",
    )
    slot_cache: bool = Field(
        True,
        description="The prompt cache: a slot's KV state is saved under data/slot_cache/ when it is evicted "
        "or the worker stops, and loaded when that chat returns.",
    )
    slot_cache_gb: float = Field(2.0, ge=0, le=10_000, description="Size bound of the prompt cache folder.")
    repack: bool | Literal["auto"] = Field(
        "auto",
        description="llama.cpp's CPU weight repacking (extra buffer types). auto: on, except where it is "
        "known to crash (Intel AMX) or has crashed before on this machine.",
    )
    reasoning_format: Literal["auto", "none", "think", "bracket", "seed", "harmony"] = Field(
        "auto",
        description="How the model marks its thought: auto reads the chat template; none keeps it in the "
        "answer; think <think>, bracket [THINK], seed <seed:think>, harmony gpt-oss channels.",
    )
    thinking_budget_note: str = Field(
        "Thinking budget reached; answering now.",
        max_length=500,
        description="Written into the thought before it is closed at the thinking budget.",
    )
    tool_call_format: Literal["auto", "hermes", "llama3", "mistral", "harmony", "json"] = Field(
        "auto",
        description="How the model writes a tool call: auto reads the chat template; hermes <tool_call>, "
        "llama3 a JSON object, mistral [TOOL_CALLS], harmony gpt-oss, json a bare JSON object (the "
        "fallback for templates without tools).",
    )
    reasoning_effort_budgets: dict[str, int] = Field(
        default_factory=lambda: {"low": 256, "medium": 1024, "high": 4096},
        description="/v1 reasoning_effort -> thinking_budget in tokens.",
    )

    @property
    def kv_streams(self) -> int:
        """KV caches of n_ctx cells the model holds: one that the slots share, or one per slot."""
        return 1 if self.kv_unified else self.parallel


class ChatSettings(_Section):
    system_prompt: str = Field(
        "You are a helpful assistant.",
        description="The prompt of chats without a character; {{original}} in a character's prompt.",
    )
    assistant_name: str = Field("Assistant", description="{{char}} in chats without a character.")
    user_name: str = Field("User", description="{{user}} when no persona is chosen.")
    preset: str | None = Field(None, description="Character preset picked for new chats.")
    impersonate_prompt: str = Field(
        "[Write {{user}}'s next message in this chat, in {{user}}'s voice and style as seen so far. "
        "Write only as {{user}}: not as {{char}} or a narrator, and do not describe what {{char}} does.]",
        description="The instruction that makes the model draft the user's next message.",
    )


class PersonaSettings(_Section):
    position: Literal["system", "depth", "none"] = Field(
        "system",
        description="Where the persona's description goes: in the system prompt, at a depth, or nowhere.",
    )
    depth: int = Field(2, ge=0, le=1000, description="With position: depth, how many messages from the end.")
    role: Literal["system", "user", "assistant"] = Field(
        "system", description="With position: depth, the role of the persona's message."
    )


class LoreSettings(_Section):
    """World-info activation, with SillyTavern's defaults."""

    scan_depth: int = Field(2, ge=0, le=1000, description="Recent messages scanned for keys.")
    budget_percent: float = Field(25, ge=0, le=100, description="Share of the context lore may use.")
    budget_tokens: int = Field(0, ge=0, description="An absolute cap on lore tokens; 0 = none.")
    recursive: bool = Field(True, description="Activated entries' content can activate other entries.")
    max_recursion_steps: int = Field(0, ge=0, le=100, description="Scan passes; 0 = until nothing new.")
    include_names: bool = Field(True, description="Scan messages as 'Name: text'.")
    case_sensitive: bool = Field(False, description="Keys match case-sensitively.")
    match_whole_words: bool = Field(True, description="Keys match whole words only.")
    group_scoring: bool = Field(False, description="Inclusion groups: the entries matching most keys win.")
    strategy: Literal["evenly", "character_first", "global_first"] = Field(
        "character_first",
        description="Order of the character's book and attached books: sorted together, or one first.",
    )
    regex_timeout_s: float = Field(0.25, gt=0, le=10, description="Longest time one regex key may run.")


class GpuSettings(_Section):
    required: bool = Field(
        False,
        description="Refuse to run unless the model is offloaded to a GPU: `python -m webui` and "
        "`python -m cli` exit with status 2 and one line naming what is missing (driver, CUDA build, "
        "offload) and the fix.",
    )


class WorkerSettings(_Section):
    """How the server supervises the model worker process."""

    max_crashes: int = Field(5, ge=1, le=10_000, description="Stop restarting after this many crashes ...")
    crash_window_s: float = Field(120, gt=0, le=86_400, description="... within this many seconds.")
    max_backoff_s: float = Field(8, ge=0, le=600, description="Longest wait before a restart (it doubles).")


class ToolsSettings(_Section):
    """MCP tool servers and how the model may call them."""

    mcp_config: str = Field(
        "config/mcp.json",
        description="MCP servers, in the mcpServers format of Claude Desktop, LM Studio and Jan; "
        "a missing file means no tools.",
    )
    approval: Literal["ask", "auto"] | list[str] = Field(
        "ask",
        description="ask: each call waits for the user's yes; auto: every call runs; a list of tool names: "
        "those run without asking, the others are asked (the API, which never waits, refuses them).",
    )
    max_rounds: int = Field(5, ge=1, le=100, description="Most rounds of tool calls in one turn.")
    call_timeout_s: float = Field(30, gt=0, le=3600, description="Longest time one tool call may run.")
    max_result_chars: int = Field(
        16_000, ge=100, le=10_000_000, description="A longer tool result is cut here, with a note saying so."
    )


class BackendSettings(_Section):
    kind: Literal["llama_cpp", "openai"] = Field(
        "llama_cpp",
        description="llama_cpp runs the model here; openai puts the UI in front of any OpenAI-compatible "
        "server (llama-server, vLLM).",
    )
    url: str | None = Field(None, description="Base URL of an OpenAI-compatible server (kind: openai).")
    api_key: str | None = Field(None, description="Its API key, sent as a Bearer token.")
    model: str | None = Field(None, description="The model name to ask that server for.")


class ServerSettings(_Section):
    host: str = Field(
        "127.0.0.1", description="Bind address; anything but loopback needs server.api_key and server.auth."
    )
    port: int = Field(7860, ge=1, le=65_535, description="Port.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call the API (same-origin by default)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names to answer besides localhost, 127.0.0.1, [::1], host."
    )
    api_key: str | None = Field(None, description="Require 'Authorization: Bearer <key>' on /api and /v1.")
    auth: str | None = Field(None, description="'user:pass' login for the UI (and basic auth on the API).")
    insecure_lan: bool = Field(False, description="Allow a non-loopback host without both credentials.")
    max_messages: int = Field(2000, ge=1, le=1_000_000, description="Messages per chat request.")
    max_queue: int = Field(64, ge=1, le=100_000, description="Open generation requests overall.")
    max_queue_per_client: int = Field(
        16, ge=1, le=100_000, description="Open generation requests per client."
    )
    remote_images: bool = Field(False, description="Let chat Markdown load images from other sites.")


class LoggingSettings(_Section):
    level: str = Field("INFO", description="Log level of data/logs/engine.log (rotated).")
    chat_content: bool = Field(False, description="Write conversation text to the logs.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        validate_assignment=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    generation: SamplingParams = Field(default_factory=SamplingParams)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    persona: PersonaSettings = Field(default_factory=PersonaSettings)
    lore: LoreSettings = Field(default_factory=LoreSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    data_dir: str = Field("data", description="Sessions, user presets, logs, caches: all state lives here.")
    presets_dir: str = Field("presets", description="The shipped character presets.")
    models_dir: str = Field("models", description="GGUF files the UI and the API may load.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what it is given: load_settings layers the file, the environment and the flags itself."""
        return (init_settings,)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        if p.is_absolute():
            return p
        return p if p.exists() or not (ROOT / p).exists() else ROOT / p

    @property
    def model_path(self) -> Path:
        return self.resolve(self.model.path)

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)


# Keys that older llama.cpp / the seed system used. Each maps to its current equivalent or warns.
MODEL_KEYS = set(ModelSettings.model_fields)
_MOVED_TO_MODEL = MODEL_KEYS - {"path"}


def _migrate(raw: dict[str, Any], source: str, warnings: list[str]) -> dict[str, Any]:
    raw = dict(raw)
    model = raw.get("model")
    if isinstance(model, str):  # `model: path/to.gguf`
        model = {"path": model}
    model = dict(model) if isinstance(model, dict) else ({} if model is None else model)
    if isinstance(model, dict):
        for key in list(raw):
            if key in _MOVED_TO_MODEL or key in ("f16_kv", "low_vram", "model_path"):
                model.setdefault(key, raw.pop(key))
        if "model_path" in model:
            model.setdefault("path", model.pop("model_path"))
        if "f16_kv" in model:
            f16 = model.pop("f16_kv")
            if "cache_type_k" not in model:
                model["cache_type_k"] = model["cache_type_v"] = "f16" if f16 else "f32"
            warnings.append(
                f"{source}: 'f16_kv' is obsolete in llama.cpp; mapped to cache_type_k/v = "
                f"{model['cache_type_k']}."
            )
        if "low_vram" in model:
            model.pop("low_vram")
            warnings.append(
                f"{source}: 'low_vram' is obsolete in llama.cpp and is ignored; "
                "lower model.n_gpu_layers or use a smaller cache_type_k/v to save VRAM."
            )
        if model:
            raw["model"] = model
    gen = raw.get("generation")
    if isinstance(gen, dict) and "max_new_tokens" in gen:
        gen = dict(gen)
        gen.setdefault("max_tokens", gen.pop("max_new_tokens"))
        raw["generation"] = gen
    return raw


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """The LLM_* variables as nested config values, parsed by pydantic-settings; other variables (another
    tool's LLM_API_TOKEN) are not ours and are left alone."""
    ours = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    try:
        return _none_for_null(_read_env(ours))
    except SettingsError:  # a list or mapping that is not JSON: name the variable
        bad = [k for k, v in ours.items() if not _parses({k: v})]
        raise ConfigError(
            f"The environment variable {', '.join(bad) or 'LLM_*'} is not valid: a list or mapping is "
            "written as JSON, for example LLM_SERVER__ALLOWED_HOSTS='[\"chat.lan\"]'.",
            field=bad[0] if bad else None,
        ) from None


def _read_env(variables: dict[str, str]) -> dict[str, Any]:
    source = EnvSettingsSource(Settings)  # its layout: prefix, "__" nesting, JSON lists
    source.env_vars = {k.lower(): v for k, v in variables.items()}
    return dict(source())


def _parses(variables: dict[str, str]) -> bool:
    try:
        _read_env(variables)
    except SettingsError:
        return False
    return True


def _none_for_null(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _none_for_null(v) for k, v in value.items()}
    return None if value == "null" else value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Settings, list[str]]:
    """Load and validate settings. Returns (settings, warnings). Raises ConfigError naming key and file."""
    cfg_path = Path(path) if path else DEFAULT_CONFIG
    source = str(cfg_path)
    warnings: list[str] = []
    raw: Any = {}
    if path is not None and not cfg_path.exists():
        raise ConfigError(f"Config file not found: {source}. Pass --config with an existing YAML file.")
    if cfg_path.exists():
        try:
            raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{source} must be a YAML mapping of sections (model:, generation:, chat: ...)."
            )
    raw = _migrate(raw, source, warnings)
    environ = dict(os.environ) if environ is None else environ
    env = _env_overrides(environ)
    if env:
        raw = _deep_merge(raw, _migrate(env, "environment", warnings))
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, source, _env_names(environ)) from None
    for w in warnings:
        log.warning(w)
    return settings, warnings


def _env_names(environ: dict[str, str]) -> dict[str, str]:
    """Config key ("model.n_ctx") -> the LLM_* variable that set it."""
    return {
        ".".join(name[len(ENV_PREFIX) :].lower().split("__")): name
        for name in environ
        if name.startswith(ENV_PREFIX)
    }


def _config_error(exc: ValidationError, source: str, env_names: dict[str, str] | None = None) -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err.get("loc", ()))
    variable = next(
        (name for k, name in (env_names or {}).items() if key == k or key.startswith(k + ".")), None
    )
    if variable is not None:  # the environment set it, not the file
        source = f"the environment variable {variable}"
    if err.get("type") == "extra_forbidden":
        return ConfigError(
            f"Unknown config key '{key}' in {source}. Remove it or check its spelling.", field=key
        )
    return ConfigError(f"Invalid config value for '{key}' in {source}: {err.get('msg')}.", field=key)
