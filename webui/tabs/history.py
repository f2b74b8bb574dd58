"""History tab: saved chats, newest first, with search; open, rename, branch, delete, download, import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import EngineError, Session

from .. import i18n
from ..i18n import I18N, i18n_label, tr
from ..markup import notify, plain_md, warn
from .chat import load_session
from .chat_files import chat_view, export_files
from .confirm import ConfirmRow, confirm_row
from .context import ChatFiles, ChatView, UIContext

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


@dataclass
class HistoryLayout:
    """The History tab's components."""

    query: gr.Textbox
    summary: gr.Markdown
    refresh_btn: gr.Button
    table: gr.Dataframe
    ids: gr.State
    selected: gr.State
    info: gr.Markdown
    open_btn: gr.Button
    dl_json: gr.DownloadButton
    dl_md: gr.DownloadButton
    delete_btn: gr.Button
    ask: ConfirmRow
    title_box: gr.Textbox
    rename_btn: gr.Button
    upto: gr.Number
    dup_btn: gr.Button
    upload: gr.UploadButton

    @property
    def listed(self) -> list[Any]:
        """What `HistoryHandlers.listing` updates."""
        return [self.table, self.ids, self.summary, *self.chosen]

    @property
    def chosen(self) -> list[Any]:
        """What `HistoryHandlers.selection` updates."""
        return [self.selected, self.info, self.title_box, self.dl_json, self.dl_md, self.upto]


def layout() -> HistoryLayout:
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
    return HistoryLayout(
        query=query,
        summary=summary,
        refresh_btn=refresh_btn,
        table=table,
        ids=ids,
        selected=selected,
        info=info,
        open_btn=open_btn,
        dl_json=dl_json,
        dl_md=dl_md,
        delete_btn=delete_btn,
        ask=ask,
        title_box=title_box,
        rename_btn=rename_btn,
        upto=upto,
        dup_btn=dup_btn,
        upload=upload,
    )


class HistoryHandlers:
    """The History tab's event handlers; each returns {component: value}."""

    def __init__(self, ctx: UIContext, ui: HistoryLayout, chat: ChatView, tabs: gr.Tabs) -> None:
        self.ctx, self.ui, self.chat, self.tabs = ctx, ui, chat, tabs
        self.store = ctx.rt.sessions

    def listing(self, q: str, current: str | None, lang_value: str | None) -> dict[Any, Any]:
        """Table value, ids, summary line, and the selection's info and downloads."""
        ui = self.ui
        summaries = self.store.list(q or "")
        for problem in self.store.pop_problems():
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
        return {
            ui.table: {"headers": headers, "data": rows},
            ui.ids: [s.id for s in summaries],
            ui.summary: line,
            **self.selection(keep, lang_value),
        }

    def selection(self, session_id: str | None, lang_value: str | None) -> dict[Any, Any]:
        """selected, info, title box, JSON download, Markdown download, upto."""
        ui = self.ui
        session = load_session(self.ctx, session_id)
        off = gr.update(value=None, interactive=False)
        none = {ui.selected: None, ui.info: tr("hi.pick", lang_value), ui.title_box: "", ui.upto: None}
        if session is None:
            return {**none, ui.dl_json: off, ui.dl_md: off}
        try:
            json_path, md_path = export_files(self.ctx, session.id)
        except (EngineError, OSError) as exc:
            warn(getattr(exc, "message", str(exc)))
            return {**none, ui.dl_json: off, ui.dl_md: off}
        title = session.title or tr("hi.untitled", lang_value)
        text = tr("hi.selected", lang_value, title=plain_md(title), n=len(session.messages), id=session.id)
        return {
            ui.selected: session.id,
            ui.info: text,
            ui.title_box: session.title,
            ui.dl_json: gr.update(value=str(json_path), interactive=True),
            ui.dl_md: gr.update(value=str(md_path), interactive=True),
            ui.upto: len(session.messages),
        }

    def pick(self, evt: gr.SelectData, id_list: list[str], lang_value: str | None) -> dict[Any, Any]:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        chosen = id_list[row] if isinstance(row, int) and 0 <= row < len(id_list) else None
        return {**self.selection(chosen, lang_value), self.ui.ask.row: gr.update(visible=False)}

    def chat_shows(self, session: Session | None, lang_value: str | None) -> dict[Any, Any]:
        """The chat tab showing `session` (None: a new chat)."""
        return dict(zip(self.chat.shows, chat_view(self.ctx, session, lang_value), strict=True))

    def open_chat(self, session_id: str | None, lang_value: str | None) -> Any:
        session = load_session(self.ctx, session_id)
        if session is None:
            warn(tr("hi.select_first", lang_value))
            return gr.skip()
        notify(tr("hi.opened", lang_value, title=session.title or session.id))
        return {**self.chat_shows(session, lang_value), self.tabs: gr.Tabs(selected="chat")}

    def ask_delete(self, session_id: str | None, lang_value: str | None) -> Any:
        session = load_session(self.ctx, session_id)
        if session is None:
            warn(tr("hi.select_first", lang_value))
            return gr.skip()
        title = plain_md(session.title or tr("hi.untitled", lang_value))
        text = tr("hi.confirm", lang_value, title=title, n=len(session.messages), id=session.id)
        return {self.ui.ask.row: gr.update(visible=True), self.ui.ask.text: text}

    def do_delete(
        self, session_id: str | None, q: str, current_chat: str | None, lang_value: str | None
    ) -> Any:
        session = load_session(self.ctx, session_id)
        try:
            if session is None:
                raise EngineError(tr("hi.select_first", lang_value))
            self.store.delete(session.id)
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        notify(tr("hi.deleted", lang_value, title=session.title or session.id))
        chat = self.chat_shows(None, lang_value) if current_chat == session.id else {}
        return {self.ui.ask.row: gr.update(visible=False), **self.listing(q, None, lang_value), **chat}

    def rename(self, session_id: str | None, title: str, q: str, lang_value: str | None) -> Any:
        try:
            if not session_id:
                raise EngineError(tr("hi.select_first", lang_value))
            session = self.store.rename(session_id, title)
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        notify(tr("hi.renamed", lang_value, title=session.title))
        return self.listing(q, session.id, lang_value)

    def duplicate(self, session_id: str | None, keep: float | None, q: str, lang_value: str | None) -> Any:
        try:
            if not session_id:
                raise EngineError(tr("hi.select_first", lang_value))
            copy = self.store.duplicate(session_id, None if keep is None else int(keep))
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        notify(tr("hi.duplicated", lang_value, title=copy.title))
        return self.listing(q, copy.id, lang_value)

    def import_file(self, data: bytes | None, q: str, lang_value: str | None) -> Any:
        try:
            if not data:
                raise EngineError(tr("hi.empty", lang_value))
            session = self.store.import_bytes(data)
        except EngineError as exc:
            warn(exc.message)
            return gr.skip()
        title = session.title or session.id
        notify(tr("hi.imported", lang_value, title=title, n=len(session.messages)))
        return self.listing("", session.id, lang_value)


def build(ctx: UIContext, tab: gr.Tab, chat: ChatView, files: ChatFiles, tabs: gr.Tabs) -> None:
    """The History tab. Open and Delete change the chat tab (`chat`), then refresh its `files`."""
    ui = layout()
    h = HistoryHandlers(ctx, ui, chat, tabs)
    sid, lang = ctx.session_id, ctx.lang
    query, selected, list_outs = ui.query, ui.selected, ui.listed
    # one listing at a time, in the order asked: the tab's own listing (the old search) finishing after the
    # one for the words just typed would put the old list back
    in_turn: dict[str, Any] = {"concurrency_limit": 1, "concurrency_id": "history-listing"}
    tab.select(h.listing, [query, selected, lang], list_outs, show_progress="hidden", **in_turn)
    ui.refresh_btn.click(h.listing, [query, selected, lang], list_outs, **in_turn)
    query.submit(h.listing, [query, selected, lang], list_outs, **in_turn)
    query.change(
        h.listing,
        [query, selected, lang],
        list_outs,
        trigger_mode="always_last",
        show_progress="hidden",
        **in_turn,
    )
    ui.table.select(h.pick, [ui.ids, lang], [*ui.chosen, ui.ask.row])
    ui.open_btn.click(h.open_chat, [selected, lang], [*chat.shows, tabs]).then(*files.refresh).then(
        *chat.options
    )
    ui.delete_btn.click(h.ask_delete, [selected, lang], [ui.ask.row, ui.ask.text])
    ui.ask.confirm.click(
        h.do_delete, [selected, query, sid, lang], [ui.ask.row, *list_outs, *chat.shows]
    ).then(*files.refresh)
    ui.rename_btn.click(h.rename, [selected, ui.title_box, query, lang], list_outs)
    ui.title_box.submit(h.rename, [selected, ui.title_box, query, lang], list_outs)
    ui.dup_btn.click(h.duplicate, [selected, ui.upto, query, lang], list_outs)
    ui.upload.upload(h.import_file, [ui.upload, query, lang], list_outs)
