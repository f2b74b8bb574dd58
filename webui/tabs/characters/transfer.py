"""The Characters tab's card import (a PNG, JSON or YAML file dropped in) and export (JSON and PNG cards)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from engine import Character, EngineError, InvalidInput

from ...i18n import I18N, i18n_label, tr
from ...markup import notify, warn
from ..context import UIContext
from .gallery import Gallery

# (character or None for a new one, language, the test message) -> what shows it
Shower = Callable[[Character | None, str | None, str], dict[Any, Any]]
EXPORT_DIR = Path(tempfile.mkdtemp(prefix="llmchat-cards-"))  # Gradio serves files from the temp dir


class Transfer:
    def __init__(self, ctx: UIContext) -> None:
        self.store = ctx.rt.presets
        self.upload = gr.File(
            label=I18N("ch.import"),
            file_types=[".png", ".json", ".yaml", ".yml"],
            height=120,
            elem_id="ch-import",
        )
        with gr.Row():
            self.export_json = gr.DownloadButton(
                i18n_label("ch.export_json"), size="sm", interactive=False, elem_id="ch-export-json"
            )
            self.export_png = gr.DownloadButton(
                i18n_label("ch.export_png"), size="sm", interactive=False, elem_id="ch-export-png"
            )

    @property
    def outputs(self) -> list[Any]:
        """What `exports` updates."""
        return [self.export_json, self.export_png]

    def exports(self, name: str | None) -> dict[Any, Any]:
        """The two export buttons: the saved preset `name` as cards, or off."""
        off = gr.update(value=None, interactive=False)
        none = {self.export_json: off, self.export_png: off}
        if not name:
            return none
        try:
            json_path, png_path = EXPORT_DIR / f"{name}.json", EXPORT_DIR / f"{name}.png"
            json_path.write_bytes(self.store.export_card_json(name))
            png_path.write_bytes(self.store.export_card_png(name))
        except (EngineError, OSError) as exc:
            warn(getattr(exc, "message", str(exc)))
            return none
        return {
            self.export_json: gr.update(value=str(json_path), interactive=True),
            self.export_png: gr.update(value=str(png_path), interactive=True),
        }

    def read(self, path: str | None, lang_value: str | None) -> Character | None:
        """The uploaded card, saved as a preset; None (with a warning) if it could not be."""
        try:
            if not path:
                raise InvalidInput(tr("ch.no_file", lang_value))
            data = Path(path).read_bytes()
            character = self.store.import_bytes(Path(path).name, data)
        except OSError:
            warn(tr("ch.no_file", lang_value))
            return None
        except EngineError as exc:
            warn(exc.message)
            return None
        notify(tr("ch.imported", lang_value, title=character.display_name, name=character.name))
        return character

    def wire(self, show: Shower, shows: list[Any], gallery: Gallery, test_msg: gr.Textbox, lang: Any) -> None:
        """An upload saves the card, shows it (`show`, which updates `shows`) and clears the upload box."""

        def on_import(path: str | None, chat_value: str | None, test_text: str, lang_value: str | None):
            character = self.read(path, lang_value)
            if character is None:
                return {self.upload: None}
            return {
                self.upload: None,
                **show(character, lang_value, test_text),
                **gallery.changed(character.name, chat_value),
            }

        self.upload.upload(
            on_import,
            [self.upload, gallery.chat_char, test_msg, lang],
            [self.upload, *shows, *gallery.outputs, gallery.chat_char],
        )
