"""The Characters tab's gallery: every saved preset with its avatar, New character, and the chat tab's
character list, which follows what is saved here."""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine import EngineError

from ...avatars import placeholder
from ...i18n import I18N
from ...markup import warn
from ..context import CUSTOM, UIContext


class Gallery:
    def __init__(self, ctx: UIContext, chat_char: gr.Dropdown) -> None:
        self.ctx, self.store, self.chat_char = ctx, ctx.rt.presets, chat_char
        self.names = gr.State([])  # the presets' names, in the gallery's order
        self.gallery = gr.Gallery(
            label=I18N("ch.gallery"),
            columns=3,
            height="auto",
            allow_preview=False,
            object_fit="cover",
            interactive=False,
            elem_id="ch-gallery",
        )
        self.new_btn = gr.Button(I18N("ch.new"), size="sm", elem_id="ch-new")

    @property
    def outputs(self) -> list[Any]:
        """What `items` updates."""
        return [self.gallery, self.names]

    def items(self, selected: str | None) -> dict[Any, Any]:
        """The gallery, with `selected` highlighted, and the names behind it."""
        items, found = [], []
        for c in self.store.list():
            try:
                avatar = self.store.avatar_path(c.name)
            except EngineError:
                avatar = None
            items.append((str(avatar) if avatar else placeholder(c.name), c.display_name))
            found.append(c.name)
        for problem in self.store.problems:
            warn(problem)
        index = found.index(selected) if selected in found else None
        return {self.gallery: gr.update(value=items, selected_index=index), self.names: found}

    def chat_choices(self, current: str | None) -> dict[Any, Any]:
        """The chat tab's character list, keeping `current` if it still exists."""
        choices = self.ctx.character_choices()
        value = current if current in {v for _, v in choices} else CUSTOM
        return {self.chat_char: gr.update(choices=choices, value=value)}

    def changed(self, selected: str | None, chat_value: str | None) -> dict[Any, Any]:
        """After a save, delete or import: the gallery and the chat tab's list."""
        return {**self.items(selected), **self.chat_choices(chat_value)}

    @staticmethod
    def picked(evt: gr.SelectData, name_list: list[str]) -> str | None:
        return name_list[evt.index] if isinstance(evt.index, int) and evt.index < len(name_list) else None
