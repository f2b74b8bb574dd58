"""Sampling parameters, with llama-cpp-python's names and bounds. Shared by the UI, the API and the CLI."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidInput


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(0.7, ge=0.0, le=5.0, description="Randomness; 0 is greedy.")
    top_p: float = Field(
        0.95, ge=0.0, le=1.0, description="Nucleus sampling: keep tokens within this probability mass."
    )
    top_k: int = Field(40, ge=0, le=1000, description="Keep only the k most likely tokens; 0 disables.")
    min_p: float = Field(
        0.05, ge=0.0, le=1.0, description="Drop tokens below this fraction of the top token's probability."
    )
    typical_p: float = Field(1.0, ge=0.0, le=1.0, description="Locally typical sampling; 1 disables.")
    repeat_penalty: float = Field(
        1.1, ge=0.0, le=3.0, description="Penalise recently seen tokens; 1 disables."
    )
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="Penalise tokens that appeared at all.")
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Penalise tokens by how often they appeared."
    )
    mirostat_mode: int = Field(0, ge=0, le=2, description="Mirostat: 0 off, 1 v1, 2 v2.")
    mirostat_tau: float = Field(5.0, ge=0.0, le=20.0, description="Mirostat target entropy.")
    mirostat_eta: float = Field(0.1, ge=0.0, le=1.0, description="Mirostat learning rate.")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="Random seed; -1 picks a new one each time.")
    max_tokens: int = Field(512, ge=1, le=131072, description="Longest reply, in tokens.")
    stop: list[str] = Field(default_factory=list, max_length=16, description="Strings that end the reply.")
    grammar: str = Field(
        "", max_length=100_000, description="GBNF grammar that constrains the reply; empty for none."
    )
    thinking: Literal["auto", "on", "off"] = Field(
        "auto", description="Thinking models: auto (the model's default), on, or off."
    )
    thinking_budget: int | None = Field(
        None, ge=0, le=131072, description="Most tokens of thought before the answer; empty for no limit."
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [v] if v else []
        return v

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, v: list[str]) -> list[str]:
        return [s for s in v if s]

    @classmethod
    def parse(cls, data: Any) -> SamplingParams:
        """Validate a dict of params (None: the defaults), raising InvalidInput that names the first bad
        field."""
        return parse_params(data)

    def sources(
        self, character: dict[str, Any] | None, session: dict[str, Any] | None
    ) -> list[tuple[str, Any, str]]:
        """With these as the config's values: (name, effective value, where it came from: "session",
        "character", "config" or "default") for every parameter, the session's over the character's."""
        from .sampling_presets import param_sources

        return param_sources(self, character, session)

    def session_overrides(self, character: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
        """With these as the config's values: what a session stores so that they, the character's sampling
        and it give `values` (checked first)."""
        from .sampling_presets import session_overrides

        return session_overrides(self, character, values)

    def merged(self, overrides: dict[str, Any] | None) -> SamplingParams:
        """A copy with `overrides` applied and validated."""
        if not overrides:
            return self
        return parse_params({**self.model_dump(), **overrides})


PARAM_NAMES = tuple(SamplingParams.model_fields)


def parse_params(data: Any) -> SamplingParams:
    """Validate a dict of params, raising InvalidInput that names the first bad field."""
    if data is None:
        return SamplingParams()
    if not isinstance(data, dict):
        raise InvalidInput("params must be a JSON object of sampling parameters.", field="params")
    try:
        return SamplingParams.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc, prefix="params") from None


def invalid_from_validation(exc: ValidationError, prefix: str = "") -> InvalidInput:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    name = f"{prefix}.{loc}" if prefix and loc else (loc or prefix)
    if err.get("type") == "extra_forbidden":
        msg = f"Unknown parameter '{name}'."
        if prefix == "params":
            msg += f" Known: {', '.join(PARAM_NAMES)}."
    else:
        msg = f"Invalid value for '{name}': {err.get('msg')}."
    return InvalidInput(msg, field=name)
