"""History tab: saved chats, newest first, with search; open, rename, branch, delete, download, import."""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine import EngineError

from .. import i18n
from ..i18n import I18N, i18n_label, tr
from ..markup import notify, plain_md, warn
from .chat import load_session
from .chat_files import chat_view, export_files
from .confirm import confirm_row
from .context import UIContext

i18n.add(
    {
        "tab.history": "History",
        "hi.search": "Search titles and messages",
        "hi.search_ph": "words to find (all must match)",
        "hi.refresh": "Refresh",
        "hi.open": "Open in chat",
        "hi.duplicate": "Duplicate (branch)",
        "hi.upto": "Messages to keep in the copy",
        "hi.upto_info": "Empty keeps them all; a smaller number branches the chat at that point.",
        "hi.delete": "Delete…",
        "hi.title": "New title",
        "hi.rename": "Rename",
        "hi.download_json": "Download JSON",
        "hi.download_md": "Export Markdown",
        "hi.import": "Import JSON…",
        "hi.col.title": "Title",
        "hi.col.updated": "Updated (UTC)",
        "hi.col.messages": "Messages",
        "hi.col.id": "ID",
        "hi.none": "No saved chats yet. Chats are saved when you send the first message.",
        "hi.no_match": "No chat matches “{q}”.",
        "hi.count": "{n} chats.",
        "hi.pick": "Click a row to select a chat.",
        "hi.selected": "Selected: **{title}** · {n} messages · `{id}`",
        "hi.select_first": "Select a chat in the list first.",
        "hi.confirm": (
            "Delete **{title}** ({n} messages, `{id}`)? The file "
            "moves to the trash folder of the data directory."
        ),
        "hi.deleted": "Deleted “{title}”.",
        "hi.renamed": "Renamed to “{title}”.",
        "hi.duplicated": "Copied as “{title}”.",
        "hi.imported": "Imported “{title}” ({n} messages).",
        "hi.opened": "Opened “{title}”.",
        "hi.untitled": "Untitled chat",
        "hi.empty": "The file is empty.",
    },
    {
        "tab.history": "履歴",
        "hi.search": "タイトルとメッセージを検索",
        "hi.search_ph": "検索する語（すべてを含むもの）",
        "hi.refresh": "更新",
        "hi.open": "チャットで開く",
        "hi.duplicate": "複製（分岐）",
        "hi.upto": "複製に残すメッセージ数",
        "hi.upto_info": "空欄ならすべて残します。小さい数にするとその位置でチャットを分岐します。",
        "hi.delete": "削除…",
        "hi.title": "新しいタイトル",
        "hi.rename": "名前を変更",
        "hi.download_json": "JSON をダウンロード",
        "hi.download_md": "Markdown で書き出す",
        "hi.import": "JSON を読み込む…",
        "hi.col.title": "タイトル",
        "hi.col.updated": "更新日時 (UTC)",
        "hi.col.messages": "メッセージ数",
        "hi.col.id": "ID",
        "hi.none": "保存されたチャットはまだありません。最初のメッセージを送ると保存されます。",
        "hi.no_match": "「{q}」に一致するチャットはありません。",
        "hi.count": "{n} 件のチャット。",
        "hi.pick": "行をクリックしてチャットを選んでください。",
        "hi.selected": "選択中：**{title}** · メッセージ {n} 件 · `{id}`",
        "hi.select_first": "先に一覧からチャットを選んでください。",
        "hi.confirm": (
            "**{title}**（メッセージ {n} 件、"
            "`{id}`）を削除しますか？ファイルはデータフォルダーのゴミ箱に移動します。"
        ),
        "hi.deleted": "「{title}」を削除しました。",
        "hi.renamed": "「{title}」に名前を変更しました。",
        "hi.duplicated": "「{title}」として複製しました。",
        "hi.imported": "「{title}」を読み込みました（メッセージ {n} 件）。",
        "hi.opened": "「{title}」を開きました。",
        "hi.untitled": "無題のチャット",
        "hi.empty": "ファイルが空です。",
    },
)


def build(ctx: UIContext, tab: gr.Tab) -> None:
    store = ctx.rt.sessions
    sid, lang = ctx.session_id, ctx.lang
    chat_outs = [sid, ctx.components["chatbot"], ctx.components["status"], ctx.components["character"]]

    query = gr.Textbox(
        label=I18N("hi.search"),
        placeholder=I18N("hi.search_ph"),
        elem_id="hi-search",
        max_lines=1,
        submit_btn=True,
    )
    with gr.Row(equal_height=True):
        summary = gr.Markdown(elem_id="hi-summary")
        refresh_btn = gr.Button(I18N("hi.refresh"), size="sm", scale=0, min_width=100, elem_id="hi-refresh")
    table = gr.Dataframe(
        interactive=False,
        max_height=380,
        wrap=True,
        elem_id="hi-table",
        datatype=["str", "str", "number", "str"],
    )
    ids = gr.State([])
    selected = gr.State(None)
    info = gr.Markdown(I18N("hi.pick"), elem_id="hi-selected")
    with gr.Row():
        open_btn = gr.Button(I18N("hi.open"), variant="primary", elem_id="hi-open")
        dl_json = gr.DownloadButton(
            i18n_label("hi.download_json"), interactive=False, elem_id="hi-download-json"
        )
        dl_md = gr.DownloadButton(i18n_label("hi.download_md"), interactive=False, elem_id="hi-download-md")
        delete_btn = gr.Button(I18N("hi.delete"), variant="stop", elem_id="hi-delete")
    ask = confirm_row("hi")
    with gr.Row():
        with gr.Column():
            title_box = gr.Textbox(label=I18N("hi.title"), max_lines=1, elem_id="hi-title")
            rename_btn = gr.Button(I18N("hi.rename"), size="sm", elem_id="hi-rename")
        with gr.Column():
            upto = gr.Number(
                label=I18N("hi.upto"), info=I18N("hi.upto_info"), precision=0, minimum=0, elem_id="hi-upto"
            )
            dup_btn = gr.Button(I18N("hi.duplicate"), size="sm", elem_id="hi-duplicate")
    upload = gr.UploadButton(
        i18n_label("hi.import"), file_types=[".json"], type="binary", elem_id="hi-import"
    )

    # --- handlers --------------------------------------------------------------------------------

    def listing(q: str, current: str | None, lang_value: str | None):
        """Table value, ids, summary line, and the selection's info and downloads."""
        summaries = store.list(q or "")
        for problem in store.pop_problems():
            warn(problem)
        headers = [tr(f"hi.col.{c}", lang_value) for c in ("title", "updated", "messages", "id")]
        rows = [
            [s.title or tr("hi.untitled", lang_value), s.updated_at[:16].replace("T", " "), s.messages, s.id]
            for s in summaries
        ]
        if rows:
            line = tr("hi.count", lang_value, n=len(rows))
        elif q and q.strip():
            line = tr("hi.no_match", lang_value, q=plain_md(q.strip()))
        else:
            line = tr("hi.none", lang_value)
        keep = current if current in {s.id for s in summaries} else None
        return (
            {"headers": headers, "data": rows},
            [s.id for s in summaries],
            line,
            *selection(keep, lang_value),
        )

    def selection(session_id: str | None, lang_value: str | None) -> tuple[Any, ...]:
        """selected, info, title box, JSON download, Markdown download, upto."""
        session = load_session(ctx, session_id)
        off = gr.update(value=None, interactive=False)
        if session is None:
            return None, tr("hi.pick", lang_value), "", off, off, None
        try:
            json_path, md_path = export_files(ctx, session.id)
        except (EngineError, OSError) as exc:
            warn(getattr(exc, "message", str(exc)))
            return None, tr("hi.pick", lang_value), "", off, off, None
        title = session.title or tr("hi.untitled", lang_value)
        text = tr("hi.selected", lang_value, title=plain_md(title), n=len(session.messages), id=session.id)
        return (
            session.id,
            text,
            session.title,
            gr.update(value=str(json_path), interactive=True),
            gr.update(value=str(md_path), interactive=True),
            len(session.messages),
        )

    def pick(evt: gr.SelectData, id_list: list[str], lang_value: str | None):
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        chosen = id_list[row] if isinstance(row, int) and 0 <= row < len(id_list) else None
        return (*selection(chosen, lang_value), gr.update(visible=False))

    def open_chat(session_id: str | None, lang_value: str | None):
        session = load_session(ctx, session_id)
        if session is None:
            warn(tr("hi.select_first", lang_value))
            return [gr.skip()] * 5
        notify(tr("hi.opened", lang_value, title=session.title or session.id))
        return (*chat_view(ctx, session, lang_value), gr.Tabs(selected="chat"))

    def ask_delete(session_id: str | None, lang_value: str | None):
        session = load_session(ctx, session_id)
        if session is None:
            warn(tr("hi.select_first", lang_value))
            return gr.skip(), gr.skip()
        title = plain_md(session.title or tr("hi.untitled", lang_value))
        text = tr("hi.confirm", lang_value, title=title, n=len(session.messages), id=session.id)
        return gr.update(visible=True), text

    def do_delete(session_id: str | None, q: str, current_chat: str | None, lang_value: str | None):
        session = load_session(ctx, session_id)
        try:
            if session is None:
                raise EngineError(tr("hi.select_first", lang_value))
            store.delete(session.id)
        except EngineError as exc:
            warn(exc.message)
            return [gr.skip()] * 14
        notify(tr("hi.deleted", lang_value, title=session.title or session.id))
        chat = chat_view(ctx, None, lang_value) if current_chat == session.id else [gr.skip()] * 4
        return (gr.update(visible=False), *listing(q, None, lang_value), *chat)

    def rename(session_id: str | None, title: str, q: str, lang_value: str | None):
        try:
            if not session_id:
                raise EngineError(tr("hi.select_first", lang_value))
            session = store.rename(session_id, title)
        except EngineError as exc:
            warn(exc.message)
            return [gr.skip()] * 9
        notify(tr("hi.renamed", lang_value, title=session.title))
        return listing(q, session.id, lang_value)

    def duplicate(session_id: str | None, keep: float | None, q: str, lang_value: str | None):
        try:
            if not session_id:
                raise EngineError(tr("hi.select_first", lang_value))
            copy = store.duplicate(session_id, None if keep is None else int(keep))
        except EngineError as exc:
            warn(exc.message)
            return [gr.skip()] * 9
        notify(tr("hi.duplicated", lang_value, title=copy.title))
        return listing(q, copy.id, lang_value)

    def import_file(data: bytes | None, q: str, lang_value: str | None):
        try:
            if not data:
                raise EngineError(tr("hi.empty", lang_value))
            session = store.import_bytes(data)
        except EngineError as exc:
            warn(exc.message)
            return [gr.skip()] * 9
        title = session.title or session.id
        notify(tr("hi.imported", lang_value, title=title, n=len(session.messages)))
        return listing("", session.id, lang_value)

    list_outs = [table, ids, summary, selected, info, title_box, dl_json, dl_md, upto]
    sel_outs = [selected, info, title_box, dl_json, dl_md, upto]
    tab.select(listing, [query, selected, lang], list_outs, show_progress="hidden")
    refresh_btn.click(listing, [query, selected, lang], list_outs)
    query.submit(listing, [query, selected, lang], list_outs)
    query.change(
        listing, [query, selected, lang], list_outs, trigger_mode="always_last", show_progress="hidden"
    )
    table.select(pick, [ids, lang], [*sel_outs, ask.row])
    refresh_chat_files = ctx.components["chat_downloads"]
    open_btn.click(open_chat, [selected, lang], [*chat_outs, ctx.components["tabs"]]).then(
        *refresh_chat_files
    ).then(*ctx.components["chat_options"])
    delete_btn.click(ask_delete, [selected, lang], [ask.row, ask.text])
    ask.confirm.click(do_delete, [selected, query, sid, lang], [ask.row, *list_outs, *chat_outs]).then(
        *refresh_chat_files
    )
    rename_btn.click(rename, [selected, title_box, query, lang], list_outs)
    title_box.submit(rename, [selected, title_box, query, lang], list_outs)
    dup_btn.click(duplicate, [selected, upto, query, lang], list_outs)
    upload.upload(import_file, [upload, query, lang], list_outs)
