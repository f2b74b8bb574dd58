"""The confirm-delete row that History and Characters share: hidden until asked, with Delete and Cancel."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import i18n
from ..i18n import I18N

i18n.add(
    {"confirm.delete": "Delete", "confirm.cancel": "Cancel"},
    {"confirm.delete": "削除する", "confirm.cancel": "キャンセル"},
)


@dataclass
class ConfirmRow:
    row: gr.Row
    text: gr.Markdown
    confirm: gr.Button


def confirm_row(prefix: str) -> ConfirmRow:
    """`<prefix>-confirm-row` with its text (`-confirm-text`), Delete (`-confirm`) and Cancel (`-cancel`);
    Cancel hides the row. The caller shows the row with its question and wires Delete."""
    with gr.Row(visible=False, elem_id=f"{prefix}-confirm-row") as row:
        text = gr.Markdown(elem_id=f"{prefix}-confirm-text")
        confirm = gr.Button(I18N("confirm.delete"), variant="stop", scale=0, elem_id=f"{prefix}-confirm")
        cancel = gr.Button(I18N("confirm.cancel"), scale=0, elem_id=f"{prefix}-cancel")
    cancel.click(lambda: gr.update(visible=False), None, row)
    return ConfirmRow(row, text, confirm)
