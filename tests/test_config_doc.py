"""The README's configuration table is generated from the settings' field descriptions: it cannot drift."""

from __future__ import annotations

from pydantic import BaseModel

from engine.config import Settings
from engine.config_doc import README, config_table


def test_every_setting_is_described() -> None:
    def undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out += undescribed(kind, f"{prefix}{name}.")
            elif not (field.description or "").strip():
                out.append(prefix + name)
        return out

    assert undescribed(Settings) == []


def test_the_readme_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert config_table() in text, (
        "README.md's config table is stale: run `python -m engine.config_doc --write`"
    )
