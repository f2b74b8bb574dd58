"""Characters tab: a gallery, a form for every field, a live prompt preview, a test reply from the draft,
save / save as new / revert / delete, card import and export, and the Custom chat's system prompt."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from engine import Character, Delta, EngineError, Finished, InvalidInput, Queued, Reasoning
from engine.character_form import FORM_FIELDS, character_from_form, form_from_character, unique_name
from engine.chat_prompt import ChatOptions, PromptPlan, build_prompt, resolve_persona
from engine.prompt import greetings

from .. import i18n
from ..avatars import placeholder
from ..i18n import I18N, i18n_label, tr
from ..markup import notify, plain_md, warn
from .chat import load_session, status_line
from .confirm import confirm_row
from .context import CUSTOM, UIContext

EXPORT_DIR = Path(tempfile.mkdtemp(prefix="llmchat-cards-"))  # Gradio serves files from the temp dir
TEST_MAX_TOKENS = 160
UI_INTERVAL_S = 0.04

# field -> (English label, Japanese label, lines)
FIELDS = {
    "name": ("Name (file name: letters, digits, _ and -)", "名前（ファイル名：英数字、_、-）", 1),
    "title": ("Display name ({{char}})", "表示名（{{char}}）", 1),
    "tags": ("Tags", "タグ", 1),
    "description": ("Description", "説明", 3),
    "personality": ("Personality", "性格", 2),
    "scenario": ("Scenario", "シナリオ", 2),
    "system_prompt": ("System prompt", "システムプロンプト", 4),
    "greeting": ("Greeting", "最初のあいさつ", 3),
    "alternate_greetings": ("Alternate greetings", "別のあいさつ", 3),
    "example_dialogue": ("Example dialogue", "会話例", 4),
    "post_history_instructions": ("Post-history instructions", "履歴の後の指示", 2),
    "creator_notes": ("Creator notes", "作者メモ", 2),
    "sampling": ("Sampling overrides (YAML or JSON)", "サンプリングの上書き（YAML または JSON）", 3),
}
INFO = {
    "tags": ("Comma-separated.", "カンマ区切り。"),
    "system_prompt": (
        "Empty uses the default prompt. {{original}} inserts the "
        "default; {{char}} and {{user}} work in every field.",
        "空なら既定のプロンプト。{{original}} で既定のプロンプトを挿入。"
        "{{char}} と {{user}} はどの欄でも使えます。",
    ),
    "alternate_greetings": (
        "One per block, separated by a line holding only ---.",
        "1 ブロックに 1 つ。--- だけの行で区切ります。",
    ),
    "example_dialogue": ("Separate conversations with <START>.", "会話と会話の間は <START> で区切ります。"),
    "post_history_instructions": (
        "A system note placed after the chat history.",
        "チャット履歴の後に置くシステムメモ。",
    ),
    "creator_notes": ("For people; never sent to the model.", "人間向けのメモ。モデルには送られません。"),
    "sampling": (
        "For example temperature: 0.8, one per line; names as in the Sampling tab.",
        "例：temperature: 0.8（1 行に 1 つ）。名前はサンプリングタブと同じ。",
    ),
}

EN = {
    "tab.characters": "Characters",
    "ch.gallery": "Characters",
    "ch.new": "New character",
    "ch.import": "Import a card: drop a PNG, JSON or YAML file here",
    "ch.export_json": "Export JSON card",
    "ch.export_png": "Export PNG card",
    "ch.editing": "Editing **{title}** (`{name}`).",
    "ch.editing_new": "New character: not saved yet.",
    "ch.shipped": "It ships with the app.",
    "ch.save": "Save",
    "ch.save_new": "Save as new",
    "ch.revert": "Revert",
    "ch.delete": "Delete…",
    "ch.confirm": (
        "Delete **{title}** (`{name}`)? The preset moves to the trash folder of the data directory."
    ),
    "ch.shipped_warn": (
        "⚠ This preset ships with the app: once deleted it is not copied back, even after a restart."
    ),
    "ch.preview": "Prompt preview",
    "ch.preview_text": (
        "What the model receives for a new chat with this draft (messages before the chat template)"
    ),
    "ch.tokens": "**{n} tokens** once the model's chat template is applied.",
    "ch.tokens_unknown": "Token count unavailable: {reason}",
    "ch.test": "Test reply",
    "ch.test_message": "Sample user message",
    "ch.test_default": "Hello! Who are you?",
    "ch.test_run": "Test reply",
    "ch.stop": "Stop",
    "ch.test_output": "Reply from the draft (nothing is saved)",
    "ch.saved": "Saved “{title}”.",
    "ch.exists": "A character named “{name}” already exists: change the name, or use Save as new.",
    "ch.deleted": "Deleted “{title}”.",
    "ch.imported": "Imported “{title}” as {name}.",
    "ch.reverted": "Reverted to the saved version.",
    "ch.pick": "Pick a character in the gallery first.",
    "ch.draft_error": "The draft has a problem: {message}",
    "ch.custom": "Custom (no character)",
    "ch.custom_prompt": "System prompt for Custom chats",
    "ch.custom_info": (
        "Used when the chat tab's character is “Custom”. {{original}} inserts the default prompt."
    ),
    "ch.custom_save": "Use for Custom chats",
    "ch.custom_saved": "New Custom chats use this prompt.",
    "ch.custom_applied": "Saved, and applied to the open Custom chat “{title}”.",
    "ch.queued": "Waiting for the model: {n} ahead…",
    "ch.no_file": "The file could not be read.",
}
JA = {
    "tab.characters": "キャラクター",
    "ch.gallery": "キャラクター",
    "ch.new": "新しいキャラクター",
    "ch.import": "カードを読み込む：PNG・JSON・YAML ファイルをここにドロップ",
    "ch.export_json": "JSON カードを書き出す",
    "ch.export_png": "PNG カードを書き出す",
    "ch.editing": "**{title}**（`{name}`）を編集中。",
    "ch.editing_new": "新しいキャラクター：まだ保存されていません。",
    "ch.shipped": "アプリ同梱のプリセットです。",
    "ch.save": "保存",
    "ch.save_new": "新規として保存",
    "ch.revert": "元に戻す",
    "ch.delete": "削除…",
    "ch.confirm": "**{title}**（`{name}`）を削除しますか？プリセットはデータフォルダーのゴミ箱に移動します。",
    "ch.shipped_warn": "⚠ アプリ同梱のプリセットです。削除すると再起動しても元に戻りません。",
    "ch.preview": "プロンプトのプレビュー",
    "ch.preview_text": (
        "この下書きで新しいチャットを始めたときにモデルが受け取る内容（チャットテンプレート適用前）"
    ),
    "ch.tokens": "チャットテンプレート適用後 **{n} トークン**。",
    "ch.tokens_unknown": "トークン数を数えられません：{reason}",
    "ch.test": "テスト返信",
    "ch.test_message": "ユーザーのメッセージ例",
    "ch.test_default": "こんにちは！あなたは誰？",
    "ch.test_run": "テスト返信",
    "ch.stop": "停止",
    "ch.test_output": "下書きからの返信（何も保存されません）",
    "ch.saved": "「{title}」を保存しました。",
    "ch.exists": (
        "「{name}」という名前のキャラクターは既にあります。名前を変えるか、新規として保存してください。"
    ),
    "ch.deleted": "「{title}」を削除しました。",
    "ch.imported": "「{title}」を {name} として読み込みました。",
    "ch.reverted": "保存済みの内容に戻しました。",
    "ch.pick": "先にギャラリーからキャラクターを選んでください。",
    "ch.draft_error": "下書きに問題があります：{message}",
    "ch.custom": "カスタム（キャラクターなし）",
    "ch.custom_prompt": "カスタムチャットのシステムプロンプト",
    "ch.custom_info": (
        "チャットタブのキャラクターが「カスタム」のときに使います。{{original}} で既定のプロンプトを挿入。"
    ),
    "ch.custom_save": "カスタムチャットに使う",
    "ch.custom_saved": "新しいカスタムチャットでこのプロンプトを使います。",
    "ch.custom_applied": "保存し、開いているカスタムチャット「{title}」にも適用しました。",
    "ch.queued": "モデルの順番待ち：前に {n} 件…",
    "ch.no_file": "ファイルを読み込めませんでした。",
}
for _f, (_en, _ja, _) in FIELDS.items():
    EN[f"ch.f.{_f}"], JA[f"ch.f.{_f}"] = _en, _ja
for _f, (_en, _ja) in INFO.items():
    EN[f"ch.i.{_f}"], JA[f"ch.i.{_f}"] = _en, _ja
i18n.add(EN, JA)


def render_messages(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def with_thought(thought: str, text: str) -> str:
    """The test reply in a plain textbox: a thinking model's thought first, indented under a marker."""
    if not thought.strip():
        return text
    indented = "\n".join("    " + line for line in thought.strip().splitlines())
    return f"💭\n{indented}\n\n{text}"


def build(ctx: UIContext, tab: gr.Tab) -> None:
    rt = ctx.rt
    store = rt.presets
    lang, sid = ctx.lang, ctx.session_id
    chat_char, custom_state = ctx.components["character"], ctx.components["custom_prompt"]
    cancels: dict[str, threading.Event] = {}

    loaded = gr.State(None)  # None: nothing shown yet; "": a new, unsaved character; else the preset's name
    names = gr.State([])
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            gallery = gr.Gallery(
                label=I18N("ch.gallery"),
                columns=3,
                height="auto",
                allow_preview=False,
                object_fit="cover",
                interactive=False,
                elem_id="ch-gallery",
            )
            new_btn = gr.Button(I18N("ch.new"), size="sm", elem_id="ch-new")
            upload = gr.File(
                label=I18N("ch.import"),
                file_types=[".png", ".json", ".yaml", ".yml"],
                height=120,
                elem_id="ch-import",
            )
            with gr.Row():
                export_json = gr.DownloadButton(
                    i18n_label("ch.export_json"), size="sm", interactive=False, elem_id="ch-export-json"
                )
                export_png = gr.DownloadButton(
                    i18n_label("ch.export_png"), size="sm", interactive=False, elem_id="ch-export-png"
                )
            with gr.Accordion(I18N("ch.custom"), open=False):
                custom_box = gr.Textbox(
                    label=I18N("ch.custom_prompt"),
                    info=I18N("ch.custom_info"),
                    lines=5,
                    elem_id="ch-custom-prompt",
                )
                custom_btn = gr.Button(I18N("ch.custom_save"), size="sm", elem_id="ch-custom-save")
        with gr.Column(scale=3):
            header = gr.Markdown(elem_id="ch-header")
            form: dict[str, Any] = {}
            with gr.Row():
                for f in ("name", "title", "tags"):
                    form[f] = field_box(f)
            for f in ("description", "personality", "scenario", "system_prompt"):
                form[f] = field_box(f)
            with gr.Row():
                form["greeting"] = field_box("greeting")
                form["alternate_greetings"] = field_box("alternate_greetings")
            for f in ("example_dialogue", "post_history_instructions"):
                form[f] = field_box(f)
            with gr.Row():
                form["creator_notes"] = field_box("creator_notes")
                form["sampling"] = field_box("sampling")
            with gr.Row():
                save_btn = gr.Button(I18N("ch.save"), variant="primary", elem_id="ch-save")
                save_new_btn = gr.Button(I18N("ch.save_new"), elem_id="ch-save-new")
                revert_btn = gr.Button(I18N("ch.revert"), elem_id="ch-revert")
                delete_btn = gr.Button(I18N("ch.delete"), variant="stop", elem_id="ch-delete")
            ask = confirm_row("ch")
            with gr.Accordion(I18N("ch.preview"), open=True):
                tokens = gr.Markdown(elem_id="ch-tokens")
                preview = gr.Textbox(
                    label=I18N("ch.preview_text"),
                    lines=8,
                    max_lines=24,
                    interactive=False,
                    buttons=["copy"],
                    elem_id="ch-preview",
                )
            with gr.Accordion(I18N("ch.test"), open=True):
                with gr.Row(equal_height=True):
                    test_msg = gr.Textbox(
                        value=tr("ch.test_default", "en"),
                        label=I18N("ch.test_message"),
                        max_lines=3,
                        scale=4,
                        elem_id="ch-test-message",
                    )
                    with gr.Column(scale=1, min_width=140):
                        test_btn = gr.Button(
                            I18N("ch.test_run"), variant="primary", size="sm", elem_id="ch-test"
                        )
                        stop_btn = gr.Button(
                            I18N("ch.stop"), variant="stop", size="sm", elem_id="ch-test-stop"
                        )
                test_out = gr.Textbox(
                    label=I18N("ch.test_output"), lines=4, interactive=False, elem_id="ch-test-output"
                )

    fields = [form[f] for f in FORM_FIELDS]

    # --- helpers ---------------------------------------------------------------------------------

    def gallery_items(selected: str | None) -> tuple[Any, list[str]]:
        items, found = [], []
        for c in store.list():
            try:
                avatar = store.avatar_path(c.name)
            except EngineError:
                avatar = None
            items.append((str(avatar) if avatar else placeholder(c.name), c.display_name))
            found.append(c.name)
        for problem in store.problems:
            warn(problem)
        index = found.index(selected) if selected in found else None
        return gr.update(value=items, selected_index=index), found

    def chat_choices(current: str | None) -> Any:
        choices = ctx.character_choices()
        value = current if current in {v for _, v in choices} else CUSTOM
        return gr.update(choices=choices, value=value)

    def exports(name: str | None) -> tuple[Any, Any]:
        off = gr.update(value=None, interactive=False)
        if not name:
            return off, off
        try:
            json_path, png_path = EXPORT_DIR / f"{name}.json", EXPORT_DIR / f"{name}.png"
            json_path.write_bytes(store.export_card_json(name))
            png_path.write_bytes(store.export_card_png(name))
        except (EngineError, OSError) as exc:
            warn(getattr(exc, "message", str(exc)))
            return off, off
        return gr.update(value=str(json_path), interactive=True), gr.update(
            value=str(png_path), interactive=True
        )

    def header_text(character: Character | None, lang_value: str | None) -> str:
        if character is None:
            return tr("ch.editing_new", lang_value)
        text = tr("ch.editing", lang_value, title=plain_md(character.display_name), name=character.name)
        return text + (" " + tr("ch.shipped", lang_value) if store.is_shipped(character.name) else "")

    def show(character: Character | None, lang_value: str | None, test_text: str) -> tuple[Any, ...]:
        """Everything that shows one character: form fields, loaded, header, exports, confirm row, preview."""
        values = form_from_character(character) if character else dict.fromkeys(FORM_FIELDS, "")
        name = character.name if character else ""
        text, count = preview_of([values[f] for f in FORM_FIELDS], test_text, lang_value)
        return (
            *(values[f] for f in FORM_FIELDS),
            name,
            header_text(character, lang_value),
            *exports(name),
            gr.update(visible=False),
            text,
            count,
        )

    def draft(values: list[Any], current: str | None = None) -> Character:
        """The form as a Character; the loaded preset supplies its avatar and card data."""
        base = base_of(current) or base_of(values[0])
        return character_from_form(dict(zip(FORM_FIELDS, values, strict=True)), base=base)

    def base_of(name: Any) -> Character | None:
        """The saved preset of that name, for what the form does not show (avatar, card data)."""
        try:
            return store.get(str(name)) if name else None
        except EngineError:
            return None

    def lenient_draft(values: list[Any]) -> Character:
        """The draft for previews: a bad name or bad sampling does not stop the preview. The saved preset
        supplies its card data (and so its lorebook)."""
        data = dict(zip(FORM_FIELDS, values, strict=True))
        base = base_of(values[0])
        try:
            return character_from_form(data, base=base)
        except InvalidInput:
            return character_from_form({**data, "name": "draft", "sampling": ""}, base=base)

    def test_history(character: Character, user_text: str) -> list[Any]:
        """A new chat with this draft: its greeting and one user message (the default persona)."""
        user = resolve_persona(rt, None).name
        history: list[Any] = [{"role": "assistant", "content": g} for g in greetings(character, user)[:1]]
        history.append({"role": "user", "content": user_text or tr("ch.test_default", "en")})
        return history

    def test_plan(character: Character, user_text: str) -> PromptPlan:
        """The test reply's prompt, as `rt.turn` builds it for a draft character."""
        return build_prompt(rt, character, test_history(character, user_text), ChatOptions())

    def preview_of(values: list[Any], user_text: str, lang_value: str | None) -> tuple[str, str]:
        try:
            plan = test_plan(lenient_draft(values), user_text)
        except InvalidInput as exc:
            return "", tr("ch.draft_error", lang_value, message=exc.message)
        messages = plan.messages
        if plan.lore:
            lore = "\n".join(
                f"- {x['book']} #{x['uid']} {x['comment']}: {x['why']} ({x['where']})" for x in plan.lore
            )
            messages = [*messages, {"role": "lore", "content": lore}]
        backend = rt.engine.backend
        if backend is None:
            return render_messages(messages), tr(
                "ch.tokens_unknown", lang_value, reason=rt.engine.load_error or ""
            )
        try:
            n = backend.count_tokens(plan.messages)
        except EngineError as exc:
            return render_messages(messages), tr("ch.tokens_unknown", lang_value, reason=exc.message)
        if n is None:
            return render_messages(messages), tr("ch.tokens_unknown", lang_value, reason=backend.name)
        return render_messages(messages), tr("ch.tokens", lang_value, n=n)

    # --- handlers --------------------------------------------------------------------------------

    def on_tab(
        current: str | None,
        chat_value: str | None,
        custom: str | None,
        custom_text: str,
        test_text: str,
        session_id: str | None,
        lang_value: str | None,
    ):
        if current is None:  # first visit: show the chat's character, else the first one
            pick = chat_value if chat_value not in (None, CUSTOM) else None
            pick = pick or next((c.name for c in store.list()), None)
            shown = show(base_of(pick), lang_value, test_text)
            current = shown[len(FORM_FIELDS)]
        else:
            shown = tuple(gr.skip() for _ in range(len(FORM_FIELDS) + 7))
        session = load_session(ctx, session_id)
        is_custom = session is not None and session.character_name is None
        open_custom = session.system_prompt if session is not None and is_custom else None
        prompt = open_custom or custom_text or custom or rt.settings.chat.system_prompt
        return (*gallery_items(current), *shown, prompt)

    def on_pick(evt: gr.SelectData, name_list: list[str], test_text: str, lang_value: str | None):
        name = name_list[evt.index] if isinstance(evt.index, int) and evt.index < len(name_list) else None
        character = base_of(name)
        if character is None:
            warn(tr("ch.pick", lang_value))
            return tuple(gr.skip() for _ in range(len(FORM_FIELDS) + 7))
        return show(character, lang_value, test_text)

    def on_new(test_text: str, lang_value: str | None):
        return (*show(None, lang_value, test_text), gr.update(selected_index=None))

    def on_save(*args: Any):
        *values, current, chat_value, lang_value = args
        try:
            character = draft(values, current)
            if character.name != current and base_of(character.name) is not None:
                raise InvalidInput(tr("ch.exists", lang_value, name=character.name))
            store.save(character)
        except EngineError as exc:
            warn(exc.message)
            return tuple(gr.skip() for _ in range(8))
        notify(tr("ch.saved", lang_value, title=character.display_name))
        return (
            character.name,
            character.name,  # the name field, unchanged
            header_text(character, lang_value),
            *exports(character.name),
            *gallery_items(character.name),
            chat_choices(chat_value),
        )

    def on_save_new(*args: Any):
        *values, current, chat_value, lang_value = args
        try:
            character = draft(values, current)
            taken = [c.name for c in store.list()]
            name = unique_name(taken, character.name)
            character = character.model_copy(update={"name": name})
            store.save(character)
        except EngineError as exc:
            warn(exc.message)
            return tuple(gr.skip() for _ in range(8))
        notify(tr("ch.saved", lang_value, title=character.display_name))
        return (
            name,
            name,
            header_text(character, lang_value),
            *exports(name),
            *gallery_items(name),
            chat_choices(chat_value),
        )

    def on_revert(current: str | None, test_text: str, lang_value: str | None):
        notify(tr("ch.reverted", lang_value))
        return show(base_of(current), lang_value, test_text)

    def on_ask_delete(current: str | None, lang_value: str | None):
        character = base_of(current)
        if character is None:
            warn(tr("ch.pick", lang_value))
            return gr.skip(), gr.skip()
        text = tr("ch.confirm", lang_value, title=plain_md(character.display_name), name=character.name)
        if store.is_shipped(character.name):
            text += "\n\n" + tr("ch.shipped_warn", lang_value)
        return gr.update(visible=True), text

    def on_delete(current: str | None, chat_value: str | None, test_text: str, lang_value: str | None):
        character = base_of(current)
        try:
            if character is None:
                raise InvalidInput(tr("ch.pick", lang_value))
            store.delete(character.name)
        except EngineError as exc:
            warn(exc.message)
            return tuple(gr.skip() for _ in range(len(FORM_FIELDS) + 10))
        notify(tr("ch.deleted", lang_value, title=character.display_name))
        rest = [c.name for c in store.list()]
        return (
            *show(base_of(rest[0] if rest else None), lang_value, test_text),
            *gallery_items(rest[0] if rest else None),
            chat_choices(chat_value),
        )

    def on_import(path: str | None, chat_value: str | None, test_text: str, lang_value: str | None):
        try:
            if not path:
                raise InvalidInput(tr("ch.no_file", lang_value))
            data = Path(path).read_bytes()
            character = store.import_bytes(Path(path).name, data)
        except OSError:
            warn(tr("ch.no_file", lang_value))
            return (None, *(gr.skip() for _ in range(len(FORM_FIELDS) + 10)))
        except EngineError as exc:
            warn(exc.message)
            return (None, *(gr.skip() for _ in range(len(FORM_FIELDS) + 10)))
        notify(tr("ch.imported", lang_value, title=character.display_name, name=character.name))
        return (
            None,
            *show(character, lang_value, test_text),
            *gallery_items(character.name),
            chat_choices(chat_value),
        )

    def on_preview(*args: Any):
        *values, test_text, lang_value = args
        return preview_of(values, test_text, lang_value)

    def on_test(request: gr.Request, *args: Any):
        *values, test_text, lang_value = args
        key = getattr(request, "session_hash", None) or "default"
        cancel = cancels[key] = threading.Event()
        try:
            character = draft(values)
            limit = {"max_tokens": min(rt.params_for(character).max_tokens, TEST_MAX_TOKENS)}
            turn = rt.turn(test_history(character, test_text), preset=character, params=limit, cancel=cancel)
            text, thought, last = "", "", 0.0
            for event in turn:
                if isinstance(event, Queued):
                    yield tr("ch.queued", lang_value, n=event.position)
                elif isinstance(event, Delta | Reasoning):
                    if isinstance(event, Reasoning):
                        thought += event.text
                    else:
                        text += event.text
                    if time.monotonic() - last >= UI_INTERVAL_S:
                        last = time.monotonic()
                        yield with_thought(thought, text)
                elif isinstance(event, Finished):
                    break
            yield with_thought(thought, text)
        except EngineError as exc:
            warn(exc.message)
            yield gr.skip()

    def on_stop(request: gr.Request) -> None:
        flag = cancels.get(getattr(request, "session_hash", None) or "default")
        if flag is not None:
            flag.set()

    def on_custom(text: str, session_id: str | None, lang_value: str | None):
        text = text or ""
        session = load_session(ctx, session_id)
        if session is not None and session.character_name is None:
            session.system_prompt = text or None
            try:
                ctx.rt.sessions.save(session)
            except EngineError as exc:
                warn(exc.message)
                return text, gr.skip()
            notify(tr("ch.custom_applied", lang_value, title=session.title or session.id))
            return text, status_line(ctx, session, lang_value)
        notify(tr("ch.custom_saved", lang_value))
        return text, gr.skip()

    shown_outs = [*fields, loaded, header, export_json, export_png, ask.row, preview, tokens]
    gallery_outs = [gallery, names]
    tab.select(
        on_tab,
        [loaded, chat_char, custom_state, custom_box, test_msg, sid, lang],
        [*gallery_outs, *shown_outs, custom_box],
        show_progress="hidden",
    )
    gallery.select(on_pick, [names, test_msg, lang], shown_outs)
    new_btn.click(on_new, [test_msg, lang], [*shown_outs, gallery])
    save_outs = [loaded, form["name"], header, export_json, export_png, *gallery_outs, chat_char]
    save_btn.click(on_save, [*fields, loaded, chat_char, lang], save_outs)
    save_new_btn.click(on_save_new, [*fields, loaded, chat_char, lang], save_outs)
    revert_btn.click(on_revert, [loaded, test_msg, lang], shown_outs)
    delete_btn.click(on_ask_delete, [loaded, lang], [ask.row, ask.text])
    ask.confirm.click(on_delete, [loaded, chat_char, test_msg, lang], [*shown_outs, *gallery_outs, chat_char])
    upload.upload(
        on_import, [upload, chat_char, test_msg, lang], [upload, *shown_outs, *gallery_outs, chat_char]
    )
    gr.on(
        [f.change for f in fields] + [test_msg.change],
        on_preview,
        [*fields, test_msg, lang],
        [preview, tokens],
        trigger_mode="always_last",
        show_progress="hidden",
    )
    test_ev = test_btn.click(on_test, [*fields, test_msg, lang], [test_out], concurrency_limit=None)
    stop_btn.click(on_stop, None, None, cancels=[test_ev], queue=False)
    custom_btn.click(on_custom, [custom_box, sid, lang], [custom_state, ctx.components["status"]])


def field_box(field: str) -> gr.Textbox:
    _, _, lines = FIELDS[field]
    kw: dict[str, Any] = {"label": I18N(f"ch.f.{field}"), "elem_id": f"ch-{field.replace('_', '-')}"}
    if field in INFO:
        kw["info"] = I18N(f"ch.i.{field}")
    return gr.Textbox(lines=lines, max_lines=max(lines * 4, 1), **kw)
