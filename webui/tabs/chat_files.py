"""The open chat as files, on the chat tab: Download chat (the session JSON, byte for byte the stored file),
Export Markdown, Export SillyTavern (JSONL), and Upload chat (import any supported format, SillyTavern JSONL
too, then open it). History uses the same exports and `chat_view`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from engine import EngineError, Session

from .. import i18n
from ..i18n import i18n_label, tr
from ..markup import notify, warn
from .chat import greeting_view, load_session, session_view, status_line, with_avatars
from .context import CUSTOM, ChatFiles, ChatView, Step, UIContext

EXPORT_DIR = Path(tempfile.mkdtemp(prefix="llmchat-export-"))  # Gradio serves files from the temp dir

i18n.add(
    {
        "cf.download": "Download chat",
        "cf.markdown": "Export Markdown",
        "cf.sillytavern": "Export SillyTavern",
        "cf.upload": "Upload chat",
        "cf.opened": "Uploaded and opened “{title}” ({n} messages).",
        "cf.empty": "The file is empty.",
    },
    {
        "cf.download": "チャットをダウンロード",
        "cf.markdown": "Markdown で書き出す",
        "cf.sillytavern": "SillyTavern 形式で書き出す",
        "cf.upload": "チャットをアップロード",
        "cf.opened": "「{title}」をアップロードして開きました（メッセージ {n} 件）。",
        "cf.empty": "ファイルが空です。",
    },
)


def export_files(ctx: UIContext, session_id: str) -> tuple[Path, Path]:
    """<id>.json holding exactly SessionStore.export_bytes, and <id>.md, in EXPORT_DIR."""
    return ctx.rt.sessions.export_files(session_id, EXPORT_DIR)


def download_updates(ctx: UIContext, session_id: str | None) -> tuple[Any, Any, Any]:
    """The three download buttons for `session_id` (JSON, Markdown, SillyTavern JSONL): its files, or
    disabled when there is no saved chat."""
    off = gr.update(value=None, interactive=False)
    if not session_id or load_session(ctx, session_id) is None:
        return off, off, off
    try:
        json_path, md_path = export_files(ctx, session_id)
        st_path = ctx.rt.sessions.export_sillytavern_file(session_id, EXPORT_DIR)
    except EngineError:  # not saved yet (or unreadable): nothing to download
        return off, off, off
    return tuple(gr.update(value=str(p), interactive=True) for p in (json_path, md_path, st_path))


def chat_view(ctx: UIContext, session: Session | None, lang: str | None) -> tuple[Any, ...]:
    """(session id, chatbot, status, character dropdown) that show `session` in the chat tab."""
    choices = ctx.character_choices()
    if session is None:
        char = ctx.rt.settings.chat.preset or CUSTOM
        return (
            None,
            with_avatars(ctx, greeting_view(ctx, char), char),
            status_line(ctx, None, lang),
            gr.update(choices=choices, value=char),
        )
    char = session.character_name or CUSTOM
    if char not in (value for _, value in choices):  # a preset deleted since: show the snapshot's name
        title = (session.character or {}).get("title") or char
        choices.append((title, char))
    return (
        session.id,
        session_view(ctx, session),
        status_line(ctx, session, lang),
        gr.update(choices=choices, value=char),
    )


def build(ctx: UIContext, chat: ChatView) -> ChatFiles:
    """The row of file buttons, refreshed after every event that can change the open chat."""
    sid, lang = ctx.session_id, ctx.lang
    with gr.Row(elem_id="chat-files"):
        dl_json = gr.DownloadButton(
            i18n_label("cf.download"), interactive=False, size="sm", elem_id="chat-download"
        )
        dl_md = gr.DownloadButton(
            i18n_label("cf.markdown"), interactive=False, size="sm", elem_id="chat-download-md"
        )
        dl_st = gr.DownloadButton(
            i18n_label("cf.sillytavern"), interactive=False, size="sm", elem_id="chat-download-st"
        )
        upload = gr.UploadButton(
            i18n_label("cf.upload"),
            file_types=[".json", ".jsonl"],
            type="binary",
            size="sm",
            elem_id="chat-upload",
        )
    downloads = [dl_json, dl_md, dl_st]

    def refresh(session_id: str | None):
        return download_updates(ctx, session_id)

    def import_chat(data: bytes | None, lang_value: str | None):
        try:
            if not data:
                raise EngineError(tr("cf.empty", lang_value))
            session = ctx.rt.sessions.import_bytes(data)
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        notify(tr("cf.opened", lang_value, title=session.title or session.id, n=len(session.messages)))
        return (*chat_view(ctx, session, lang_value), *download_updates(ctx, session.id))

    for event in chat.changed:
        event.then(refresh, [sid], downloads, show_progress="hidden")
    upload.upload(import_chat, [upload, lang], [*chat.shows, *downloads])
    return ChatFiles(refresh=Step(refresh, [sid], downloads))
