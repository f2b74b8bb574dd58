"""Lorebooks tab: user personas, and lorebooks (SillyTavern world info): import by drag-and-drop, export,
an editor with every entry field, and "test activation" on pasted text."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from engine import EngineError

from .. import i18n
from ..i18n import I18N, i18n_label, tr
from ..markup import notify, warn
from .context import UIContext

EXPORT_DIR = Path(tempfile.mkdtemp(prefix="llmchat-lore-"))

EN = {
    "tab.lore": "Lorebooks",
    "lo.personas": "Personas (who {{user}} is)",
    "lo.persona_pick": "Persona",
    "lo.persona_name": "Name ({{user}})",
    "lo.persona_desc": "Description (the character knows this)",
    "lo.persona_avatar": "Avatar (optional)",
    "lo.persona_default": "Default for new chats",
    "lo.persona_save": "Save persona",
    "lo.persona_delete": "Delete persona",
    "lo.persona_saved": "Saved persona “{name}”.",
    "lo.books_heading": "### Lorebooks",
    "lo.book_pick": "Lorebook",
    "lo.import": "Import: drop a SillyTavern world-info JSON, or a character card with a lorebook",
    "lo.export": "Export (SillyTavern JSON)",
    "lo.new_book": "New lorebook name",
    "lo.create": "Create",
    "lo.delete_book": "Delete lorebook",
    "lo.imported": "Imported “{name}” ({n} entries).",
    "lo.deleted": "Deleted “{name}”.",
    "lo.entry_pick": "Entry",
    "lo.new_entry": "New entry",
    "lo.save_entry": "Save entry",
    "lo.delete_entry": "Delete entry",
    "lo.saved_entry": "Saved entry {uid}.",
    "lo.test": "Test activation",
    "lo.test_text": "Chat text (one message per paragraph, the last is the newest)",
    "lo.test_run": "Which entries fire?",
    "lo.pick_book": "Pick or create a lorebook first.",
    "lo.f.comment": "Title / memo (not sent to the model)",
    "lo.f.key": "Keys, one per line (/regex/flags allowed)",
    "lo.f.keysecondary": "Optional filter keys, one per line",
    "lo.f.selectiveLogic": "Filter logic",
    "lo.f.content": "Content (inserted into the prompt)",
    "lo.f.constant": "Constant (always in)",
    "lo.f.disable": "Disabled",
    "lo.f.order": "Insertion order (higher = later)",
    "lo.f.position": "Position",
    "lo.f.depth": "Depth (for at_depth)",
    "lo.f.role": "Role (for at_depth)",
    "lo.f.probability": "Probability %",
    "lo.f.useProbability": "Use probability",
    "lo.f.group": "Inclusion groups (comma separated)",
    "lo.f.groupOverride": "Prioritize in group",
    "lo.f.groupWeight": "Group weight",
    "lo.f.scanDepth": "Scan depth (blank: the book's)",
    "lo.f.caseSensitive": "Case-sensitive",
    "lo.f.matchWholeWords": "Match whole words",
    "lo.f.excludeRecursion": "Not activated by other entries",
    "lo.f.preventRecursion": "Does not activate other entries",
    "lo.f.delayUntilRecursion": "Delay until recursion (level; 0 = off)",
}
JA = {
    "tab.lore": "ロアブック",
    "lo.personas": "ペルソナ（{{user}} は誰か）",
    "lo.persona_pick": "ペルソナ",
    "lo.persona_name": "名前（{{user}}）",
    "lo.persona_desc": "説明（キャラクターが知っていること）",
    "lo.persona_avatar": "アバター（任意）",
    "lo.persona_default": "新しいチャットの既定にする",
    "lo.persona_save": "ペルソナを保存",
    "lo.persona_delete": "ペルソナを削除",
    "lo.persona_saved": "ペルソナ「{name}」を保存しました。",
    "lo.books_heading": "### ロアブック",
    "lo.book_pick": "ロアブック",
    "lo.import": "読み込み：SillyTavern のワールド情報 JSON か、ロアブック付きのキャラクターカードをドロップ",
    "lo.export": "書き出し（SillyTavern JSON）",
    "lo.new_book": "新しいロアブックの名前",
    "lo.create": "作成",
    "lo.delete_book": "ロアブックを削除",
    "lo.imported": "「{name}」を読み込みました（{n} 件）。",
    "lo.deleted": "「{name}」を削除しました。",
    "lo.entry_pick": "エントリ",
    "lo.new_entry": "新しいエントリ",
    "lo.save_entry": "エントリを保存",
    "lo.delete_entry": "エントリを削除",
    "lo.saved_entry": "エントリ {uid} を保存しました。",
    "lo.test": "発動テスト",
    "lo.test_text": "チャットの文章（段落ごとに 1 メッセージ、最後が最新）",
    "lo.test_run": "どのエントリが発動する？",
    "lo.pick_book": "先にロアブックを選ぶか作成してください。",
    "lo.f.comment": "タイトル／メモ（モデルには送られません）",
    "lo.f.key": "キー（1 行に 1 つ、/正規表現/フラグ も可）",
    "lo.f.keysecondary": "追加フィルターのキー（1 行に 1 つ）",
    "lo.f.selectiveLogic": "フィルターの論理",
    "lo.f.content": "内容（プロンプトに入る文章）",
    "lo.f.constant": "常時（いつも入る）",
    "lo.f.disable": "無効",
    "lo.f.order": "挿入順（大きいほど後ろ）",
    "lo.f.position": "位置",
    "lo.f.depth": "深さ（at_depth のとき）",
    "lo.f.role": "ロール（at_depth のとき）",
    "lo.f.probability": "確率 %",
    "lo.f.useProbability": "確率を使う",
    "lo.f.group": "インクルージョングループ（カンマ区切り）",
    "lo.f.groupOverride": "グループ内で優先",
    "lo.f.groupWeight": "グループの重み",
    "lo.f.scanDepth": "スキャンの深さ（空欄：ロアブックの設定）",
    "lo.f.caseSensitive": "大文字と小文字を区別",
    "lo.f.matchWholeWords": "単語単位で一致",
    "lo.f.excludeRecursion": "他のエントリからは発動しない",
    "lo.f.preventRecursion": "他のエントリを発動させない",
    "lo.f.delayUntilRecursion": "再帰まで遅らせる（レベル、0 = なし）",
}
i18n.add(EN, JA)

TRI_CHOICES = ["default", "yes", "no"]


def entry_field(name: str, choices: dict[str, Any]) -> Any:
    """The input for entry field `name`; `choices`: the (label, value) pairs of the fields that take one."""
    label = I18N(f"lo.f.{name}")
    elem = f"lo-f-{name}"
    if name in (
        "constant",
        "disable",
        "useProbability",
        "groupOverride",
        "excludeRecursion",
        "preventRecursion",
    ):
        return gr.Checkbox(label=label, elem_id=elem)
    if name in ("caseSensitive", "matchWholeWords"):
        return gr.Dropdown(TRI_CHOICES, value="default", label=label, elem_id=elem)
    if name in choices:
        return gr.Dropdown(choices[name], value="0", label=label, elem_id=elem)
    if name in ("order", "depth", "probability", "groupWeight", "scanDepth", "delayUntilRecursion"):
        return gr.Number(label=label, elem_id=elem)
    lines = {"content": 5, "key": 3, "keysecondary": 2}.get(name, 1)
    return gr.Textbox(label=label, lines=lines, max_lines=20, elem_id=elem)


class PersonaEditor:
    """The user's personas: pick, edit name, description and avatar, make default, save, delete."""

    def __init__(self, ctx: UIContext) -> None:
        self.rt, self.lang = ctx.rt, ctx.lang
        with gr.Accordion(I18N("lo.personas"), open=True):
            with gr.Row():
                self.pick = gr.Dropdown(
                    choices=[], label=I18N("lo.persona_pick"), scale=1, elem_id="lo-persona-pick"
                )
                self.name = gr.Textbox(label=I18N("lo.persona_name"), scale=1, elem_id="lo-persona-name")
                self.default = gr.Checkbox(
                    label=I18N("lo.persona_default"), scale=1, elem_id="lo-persona-default"
                )
            with gr.Row():
                self.desc = gr.Textbox(
                    label=I18N("lo.persona_desc"), lines=3, scale=3, elem_id="lo-persona-desc"
                )
                self.avatar = gr.Image(label=I18N("lo.persona_avatar"), type="filepath", height=120, scale=1)
            with gr.Row():
                self.save_btn = gr.Button(
                    I18N("lo.persona_save"), variant="primary", size="sm", elem_id="lo-persona-save"
                )
                self.delete_btn = gr.Button(
                    I18N("lo.persona_delete"), variant="stop", size="sm", elem_id="lo-persona-delete"
                )

    def view(self, name: str | None) -> dict[Any, Any]:
        store = self.rt.personas
        names = [p.name for p in store.list()]
        p = store.find(name) if name in names else None
        avatar = store.avatar_path(p) if p else None
        return {
            self.pick: gr.update(choices=names, value=p.name if p else None),
            self.name: p.name if p else "",
            self.desc: p.description if p else "",
            self.avatar: str(avatar) if avatar else None,
            self.default: bool(p) and store.default_name() == p.name,
        }

    def on_save(self, name: str, desc: str, avatar: str | None, default: bool, lang_value: str | None):
        store = self.rt.personas
        try:
            stored = None
            if avatar:
                data = Path(avatar).read_bytes()
                stored = store.store_avatar(data)
            name = (name or "").strip()
            was_default = store.default_name() == name
            make_default = True if default else (False if was_default else None)
            persona = store.put(name, desc or "", stored, make_default=make_default)
        except (EngineError, OSError) as exc:
            warn(getattr(exc, "message", str(exc)))
            return gr.skip()
        notify(tr("lo.persona_saved", lang_value, name=persona.name))
        return self.view(persona.name)

    def on_delete(self, name: str | None, lang_value: str | None):
        try:
            self.rt.personas.delete(str(name or ""))
            notify(tr("lo.deleted", lang_value, name=name))
        except EngineError as exc:
            warn(exc.message)
        return self.view(None)

    def wire(self) -> None:
        outs = [self.pick, self.name, self.desc, self.avatar, self.default]
        self.pick.input(self.view, [self.pick], outs)
        self.save_btn.click(self.on_save, [self.name, self.desc, self.avatar, self.default, self.lang], outs)
        self.delete_btn.click(self.on_delete, [self.pick, self.lang], outs)


class BookList:
    """The left column: pick, import, export, create and delete lorebooks."""

    def __init__(self) -> None:
        self.pick = gr.Dropdown(choices=[], label=I18N("lo.book_pick"), elem_id="lo-book-pick")
        self.upload = gr.File(
            label=I18N("lo.import"), file_types=[".json", ".png"], height=110, elem_id="lo-import"
        )
        self.export = gr.DownloadButton(
            i18n_label("lo.export"), size="sm", interactive=False, elem_id="lo-export"
        )
        with gr.Row(equal_height=True):
            self.new_name = gr.Textbox(label=I18N("lo.new_book"), scale=3, elem_id="lo-new-name")
            self.create = gr.Button(I18N("lo.create"), size="sm", scale=1, elem_id="lo-create")
        self.delete = gr.Button(I18N("lo.delete_book"), variant="stop", size="sm", elem_id="lo-delete")


class EntryEditor:
    """The right column: pick or add an entry, every entry field, save, delete, and test activation."""

    def __init__(self, field_names: tuple[str, ...], choices: dict[str, Any]) -> None:
        with gr.Row():
            self.pick = gr.Dropdown(choices=[], label=I18N("lo.entry_pick"), scale=3, elem_id="lo-entry-pick")
            self.new = gr.Button(I18N("lo.new_entry"), size="sm", scale=1, elem_id="lo-entry-new")
        form: dict[str, Any] = {}
        with gr.Row():
            for f in ("comment", "order", "position", "depth", "role"):
                form[f] = entry_field(f, choices)
        with gr.Row():
            for f in ("key", "keysecondary", "selectiveLogic"):
                form[f] = entry_field(f, choices)
        form["content"] = entry_field("content", choices)
        with gr.Row():
            for f in ("constant", "disable", "useProbability", "probability", "scanDepth"):
                form[f] = entry_field(f, choices)
        with gr.Row():
            for f in ("group", "groupOverride", "groupWeight", "caseSensitive", "matchWholeWords"):
                form[f] = entry_field(f, choices)
        with gr.Row():
            for f in ("excludeRecursion", "preventRecursion", "delayUntilRecursion"):
                form[f] = entry_field(f, choices)
        self.form, self.field_names = form, field_names
        self.fields = [form[f] for f in field_names]
        with gr.Row():
            self.save = gr.Button(
                I18N("lo.save_entry"), variant="primary", size="sm", elem_id="lo-entry-save"
            )
            self.delete = gr.Button(
                I18N("lo.delete_entry"), variant="stop", size="sm", elem_id="lo-entry-delete"
            )
        with gr.Accordion(I18N("lo.test"), open=True):
            self.test_text = gr.Textbox(label=I18N("lo.test_text"), lines=4, elem_id="lo-test-text")
            self.test_run = gr.Button(I18N("lo.test_run"), size="sm", elem_id="lo-test-run")
            self.test_out = gr.JSON(label=None, elem_id="lo-test-out")


class BookEditor:
    """Lorebooks and their entries; every handler that changes a book shows it again (`view`)."""

    def __init__(self, ctx: UIContext) -> None:
        self.rt, self.lang = ctx.rt, ctx.lang
        gr.Markdown(I18N("lo.books_heading"))
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                self.books = BookList()
            with gr.Column(scale=3):
                self.entries = EntryEditor(self.rt.lorebooks.form_fields, self.rt.lorebooks.form_choices)

    @property
    def outputs(self) -> list[Any]:
        """What `view` updates."""
        return [self.books.pick, self.books.export, self.entries.pick, *self.entries.fields]

    def entry_view(self, book: Any, key: str | None) -> dict[Any, Any]:
        """The entry picker and form for entry `key` of `book` (a lorebook, or None)."""
        names = self.entries.field_names
        entry = book.entries.get(key) if book is not None and key is not None else None
        values = self.rt.lorebooks.entry_form(entry) if entry is not None else dict.fromkeys(names)
        choices = [(f"{e.uid}: {e.title()}", k) for k, e in book.entries.items()] if book is not None else []
        pick = gr.update(choices=choices, value=key if entry is not None else None)
        return {self.entries.pick: pick, **{self.entries.form[f]: values[f] for f in names}}

    def export_file(self, name: str) -> Any:
        path = EXPORT_DIR / f"{name}.json"
        path.write_bytes(self.rt.lorebooks.export_bytes(name))
        return gr.update(value=str(path), interactive=True)

    def view(self, name: str | None, entry_key: str | None = None) -> dict[Any, Any]:
        """The book list with `name` picked, its export, and its entry `entry_key` (else the first)."""
        store = self.rt.lorebooks
        names = store.names()
        book = None
        if name in names:
            try:
                book = store.get(str(name))
            except EngineError as exc:
                warn(exc.message)
        key = entry_key if book is not None and entry_key in book.entries else None
        if key is None and book is not None and book.entries:
            key = next(iter(book.entries))
        export = self.export_file(str(name)) if book is not None else gr.update(value=None, interactive=False)
        return {
            self.books.pick: gr.update(choices=names, value=name if book is not None else None),
            self.books.export: export,
            **self.entry_view(book, key),
        }

    def on_import(self, file: str | None, lang_value: str | None):
        if not file:
            return gr.skip()
        try:
            path = Path(file)
            name, book = self.rt.lorebooks.import_bytes(path.name, path.read_bytes())
        except (EngineError, OSError) as exc:
            warn(getattr(exc, "message", str(exc)))
            return {self.books.upload: None}
        notify(tr("lo.imported", lang_value, name=name, n=len(book.entries)))
        return {self.books.upload: None, **self.view(name)}

    def on_create(self, name: str, lang_value: str | None):
        try:
            name = self.rt.lorebooks.create((name or "").strip())
        except EngineError as exc:
            warn(exc.message)
            return {self.books.new_name: ""}
        return {self.books.new_name: "", **self.view(name)}

    def on_delete_book(self, name: str | None, lang_value: str | None):
        try:
            self.rt.lorebooks.delete(str(name or ""))
            notify(tr("lo.deleted", lang_value, name=name))
        except EngineError as exc:
            warn(exc.message)
        return self.view(None)

    def on_new_entry(self, name: str | None, lang_value: str | None):
        if not name:
            warn(tr("lo.pick_book", lang_value))
            return gr.skip()
        entry = self.rt.lorebooks.add_entry(name)
        return self.view(name, str(entry.uid))

    def on_save_entry(self, name: str | None, key: str | None, lang_value: str | None, *values: Any):
        if not name or key is None:
            warn(tr("lo.pick_book", lang_value))
            return gr.skip()
        try:
            form = dict(zip(self.entries.field_names, values, strict=True))
            entry = self.rt.lorebooks.save_entry(name, key, form)
        except (EngineError, KeyError) as exc:
            warn(getattr(exc, "message", str(exc)))
            return gr.skip()
        notify(tr("lo.saved_entry", lang_value, uid=entry.uid))
        return self.view(name, key)

    def on_delete_entry(self, name: str | None, key: str | None):
        if not name or key is None:
            return gr.skip()
        self.rt.lorebooks.delete_entry(name, key)
        return self.view(name)

    def on_test(self, name: str | None, text: str, lang_value: str | None) -> Any:
        if not name:
            warn(tr("lo.pick_book", lang_value))
            return None
        try:
            return self.rt.lore_activation(name, text or "")
        except EngineError as exc:
            warn(exc.message)
            return None

    def wire(self) -> None:
        books, entries, lang, outs = self.books, self.entries, self.lang, self.outputs
        books.upload.upload(self.on_import, [books.upload, lang], [books.upload, *outs])
        books.pick.input(self.view, [books.pick], outs)
        books.create.click(self.on_create, [books.new_name, lang], [books.new_name, *outs])
        books.delete.click(self.on_delete_book, [books.pick, lang], outs)
        entries.pick.input(lambda name, key: self.view(name, key), [books.pick, entries.pick], outs)
        entries.new.click(self.on_new_entry, [books.pick, lang], outs)
        entries.save.click(self.on_save_entry, [books.pick, entries.pick, lang, *entries.fields], outs)
        entries.delete.click(self.on_delete_entry, [books.pick, entries.pick], outs)
        entries.test_run.click(self.on_test, [books.pick, entries.test_text, lang], [entries.test_out])


def build(ctx: UIContext, tab: gr.Tab) -> None:
    """The Lorebooks tab: personas above, lorebooks below."""
    rt = ctx.rt
    people, books = PersonaEditor(ctx), BookEditor(ctx)
    people.wire()
    books.wire()

    def on_tab() -> tuple[Any, Any]:
        """Fresh lists (the API or the terminal may have changed them); what is being edited stays."""
        return (
            gr.update(choices=[p.name for p in rt.personas.list()]),
            gr.update(choices=rt.lorebooks.names()),
        )

    tab.select(on_tab, None, [people.pick, books.books.pick], show_progress="hidden")
