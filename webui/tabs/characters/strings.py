"""The Characters tab's text: the form's fields (label, Japanese label, lines), their help, and messages."""

from __future__ import annotations

from ... import i18n

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
