"""Getting models, inside the GPU & models tab: the memory estimate for the picked file and settings (shown
before Load), each model's remembered settings filled in when it is picked, and a Hugging Face download
with progress and Cancel that adds the file to the picker. The engine does the work (engine/model_manager)."""

from __future__ import annotations

from functools import partial
from typing import Any

import gradio as gr

from engine import EngineError, Runtime

from .. import i18n
from ..i18n import I18N, tr
from ..markup import escape_text, warn
from .context import UIContext

TICK_S = 1.0
BAR = 24  # characters in the progress bar

i18n.add(
    {
        "dl.title": "Download from Hugging Face",
        "dl.repo": "Repo or link",
        "dl.token": "Token (gated repos only; never saved)",
        "dl.list": "List files",
        "dl.file": "File",
        "dl.mmproj": "Also download the vision projector ({name})",
        "dl.start": "Download",
        "dl.cancel": "Cancel",
        "dl.found": "{n} GGUF file(s) in **{repo}**.",
        "dl.gated": " This repo is gated: it needs a token with access.",
        "dl.none": "No GGUF files in **{repo}**.",
        "dl.pick": "List a repo's files and pick one first.",
        "dl.progress": "{icon} **{name}**: {done} of {total} ({pct}%){rate}{eta}",
        "dl.rate": " · {speed}/s",
        "dl.eta": " · {s} s left",
        "dl.downloading": "⏬",
        "dl.verifying": "🔎 checking",
        "dl.done": "✅ Downloaded **{name}**. Check the estimate and press Load model.",
        "dl.cancelled": "Cancelled: nothing was kept.",
        "dl.failed": "❌ {error}",
        "dl.resumed": " (resumed from {size})",
        "dl.fit": "Most layers that fit",
        "est.fits_gpu": "✅ Fits on the GPU: all {n} layers, {vram} of VRAM ({vram_free} free).",
        "est.partial_gpu": (
            "🟡 {gpu} of {n} layers on the GPU ({vram} of VRAM), the rest on the CPU ({ram} of RAM)."
        ),
        "est.fits_cpu": "✅ Fits in RAM: {ram} needed, {ram_free} free.",
        "est.short_ram": (
            "⚠️ **Will not fit:** needs {short} more RAM than is free ({ram} needed, {ram_free} free). "
            "Lower n_ctx or pick a smaller quant."
        ),
        "est.short_vram": (
            "⚠️ **Will not fit on the GPU:** needs {short} more VRAM than is free. {fit} of {n} "
            "layers fit: press “Most layers that fit”, or lower n_ctx."
        ),
        "est.detail": "Weights {w} · KV cache {kv} · compute {c}.",
        "est.unknown": "unknown",
    },
    {
        "dl.title": "Hugging Face からダウンロード",
        "dl.repo": "リポジトリまたはリンク",
        "dl.token": "トークン（ゲート付きリポジトリのみ・保存されません）",
        "dl.list": "ファイル一覧",
        "dl.file": "ファイル",
        "dl.mmproj": "画像用プロジェクター（{name}）もダウンロード",
        "dl.start": "ダウンロード",
        "dl.cancel": "キャンセル",
        "dl.found": "**{repo}** に GGUF ファイルが {n} 件あります。",
        "dl.gated": " このリポジトリはゲート付きです。アクセス権のあるトークンが必要です。",
        "dl.none": "**{repo}** に GGUF ファイルはありません。",
        "dl.pick": "先にリポジトリのファイル一覧を表示して選んでください。",
        "dl.progress": "{icon} **{name}**：{total} 中 {done}（{pct}%）{rate}{eta}",
        "dl.rate": " · {speed}/秒",
        "dl.eta": " · 残り {s} 秒",
        "dl.downloading": "⏬",
        "dl.verifying": "🔎 検証中",
        "dl.done": (
            "✅ **{name}** をダウンロードしました。見積もりを確認して「モデルを読み込む」を押してください。"
        ),
        "dl.cancelled": "キャンセルしました。何も残っていません。",
        "dl.failed": "❌ {error}",
        "dl.resumed": "（{size} から再開）",
        "dl.fit": "収まる最大の層数",
        "est.fits_gpu": "✅ GPU に収まります：全 {n} 層、VRAM {vram}（空き {vram_free}）。",
        "est.partial_gpu": "🟡 {n} 層中 {gpu} 層を GPU（VRAM {vram}）、残りを CPU（RAM {ram}）で実行。",
        "est.fits_cpu": "✅ RAM に収まります：必要 {ram}、空き {ram_free}。",
        "est.short_ram": (
            "⚠️ **収まりません：** RAM が {short} 不足しています（必要 {ram}、空き {ram_free}）。"
            "n_ctx を下げるか、小さい量子化を選んでください。"
        ),
        "est.short_vram": (
            "⚠️ **GPU に収まりません：** VRAM が {short} 不足しています。{n} 層中 {fit} 層なら収まります。"
            "「収まる最大の層数」を押すか、n_ctx を下げてください。"
        ),
        "est.detail": "重み {w} · KV キャッシュ {kv} · 計算用 {c}。",
        "est.unknown": "不明",
    },
)


def gib(n: int) -> str:
    """Bytes for people: 1.2 GB, 34 MB, 300 KB (as the engine's estimate messages write them)."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def estimate_text(est: Any, lang: str | None) -> str:
    """A memory estimate's verdict in the user's language, with the numbers behind it."""

    def size(n: int | None) -> str:
        return tr("est.unknown", lang) if n is None else gib(n)

    verdict = tr(
        f"est.{est.verdict}",
        lang,
        n=est.n_layers,
        gpu=est.gpu_layers,
        fit=est.layers_fit if est.layers_fit is not None else 0,
        vram=size(est.vram_needed),
        vram_free=size(est.vram_free),
        ram=size(est.ram_needed),
        ram_free=size(est.ram_free),
        short=size(est.short_by),
    )
    return verdict + "\n\n" + tr("est.detail", lang, w=gib(est.weights), kv=gib(est.kv), c=gib(est.compute))


def progress_text(s: Any, lang: str | None) -> str:
    name = escape_text(s.name)
    if s.state == "done":
        return tr("dl.done", lang, name=name)
    if s.state == "cancelled":
        return tr("dl.cancelled", lang)
    if s.state == "failed":
        return tr("dl.failed", lang, error=escape_text(s.error or ""))
    pct = int(100 * s.bytes_done / s.bytes_total) if s.bytes_total else 0
    filled = BAR * pct // 100
    line = tr(
        "dl.progress",
        lang,
        icon=tr(f"dl.{s.state}", lang),
        name=name,
        done=gib(s.bytes_done),
        total=gib(s.bytes_total),
        pct=pct,
        rate=tr("dl.rate", lang, speed=gib(int(s.speed_bps))) if s.speed_bps else "",
        eta=tr("dl.eta", lang, s=int(s.eta_s)) if s.eta_s is not None and s.state == "downloading" else "",
    )
    if s.resumed_from:
        line += tr("dl.resumed", lang, size=gib(s.resumed_from))
    return f"{line}\n\n`{'▓' * filled}{'░' * (BAR - filled)}`"


FIELD_KEYS = ("n_gpu_layers", "n_ctx", "flash_attn", "cache_type_k", "cache_type_v")


def _overrides(values: tuple[Any, ...]) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, float) else v for k, v in zip(FIELD_KEYS, values, strict=True)}


def show_estimate(rt: Runtime, name: str | None, *rest: Any) -> str:
    """The estimate for the picked file with the fields' values (`rest`: the fields, then the language)."""
    *values, lang = rest
    if not name:
        return ""
    try:
        return estimate_text(rt.models.estimate(name, _overrides(tuple(values))), lang)
    except EngineError as exc:
        return f"⚠️ {escape_text(exc.message)}"


def restore(rt: Runtime, name: str | None, lang: str | None) -> tuple[Any, ...]:
    """A picked model's remembered settings (else the config's) go into the fields, with its estimate."""
    try:
        s = rt.models.settings_for(name) if name else None
    except EngineError:
        s = None
    if s is None:
        return (*([gr.skip()] * len(FIELD_KEYS)), "")
    values = tuple(s[k] for k in FIELD_KEYS)
    return (*values, show_estimate(rt, name, *values, lang))


def fit(rt: Runtime, name: str | None, *rest: Any) -> tuple[Any, str]:
    """n_gpu_layers: the most layers that fit in free VRAM (0 without a usable GPU)."""
    *values, lang = rest
    if not name:
        return gr.skip(), ""
    try:
        est = rt.models.estimate(name, {**_overrides(tuple(values)), "n_gpu_layers": "auto"})
    except EngineError as exc:
        return gr.skip(), f"⚠️ {escape_text(exc.message)}"
    return est.n_gpu_layers, estimate_text(est, lang)


def build_estimate(ctx: UIContext, *, picker: gr.Dropdown, fields: tuple[Any, ...]) -> None:
    """The estimate above Load, kept up to date with the picked file and the load settings. `fields` are the
    tab's n_gpu_layers, n_ctx, flash attention and cache type K/V inputs, in that order."""
    with gr.Row(equal_height=True):
        est_md = gr.Markdown(elem_id="gpu-estimate")
        fit_btn = gr.Button(I18N("dl.fit"), size="sm", scale=0, min_width=200, elem_id="gpu-fit")
    lang = ctx.lang
    picker.change(partial(restore, ctx.rt), [picker, lang], [*fields, est_md], show_progress="hidden")
    for field in fields:
        field.input(partial(show_estimate, ctx.rt), [picker, *fields, lang], [est_md], show_progress="hidden")
    fit_btn.click(partial(fit, ctx.rt), [picker, *fields, lang], [fields[0], est_md])


def list_files(rt: Runtime, text: str, secret: str, lang: str | None) -> tuple[Any, ...]:
    """(file choices, {file: projectors offered}, the projector checkbox, a note) for a repo."""
    try:
        listing, picked = rt.models.downloads.browse(text, token=secret or None)
    except EngineError as exc:
        warn(exc.message)
        failed = tr("dl.failed", lang, error=escape_text(exc.message))
        return gr.update(choices=[], value=None), {}, gr.update(visible=False), failed
    choices = [(_label(m), m.name) for m in listing.files]
    value = picked or (choices[0][1] if choices else None)
    repo = escape_text(listing.repo)
    note = tr("dl.found", lang, n=len(choices), repo=repo) if choices else tr("dl.none", lang, repo=repo)
    if listing.gated:
        note += tr("dl.gated", lang)
    offered = {m.name: m.mmproj for m in listing.files}
    return gr.update(choices=choices, value=value), offered, projector(value, offered, lang), note


def projector(name: str | None, offered: dict[str, list[str]], lang: str | None) -> Any:
    names = (offered or {}).get(name or "") or []
    if not names:
        return gr.update(visible=False, value=False)
    return gr.update(visible=True, label=tr("dl.mmproj", lang, name=names[0]))


def start(
    rt: Runtime, text: str, name: str | None, with_mmproj: bool, secret: str, lang: str | None
) -> tuple[Any, Any, str]:
    """(job id, the timer, a note). The token goes to this download only."""
    if not name:
        warn(tr("dl.pick", lang))
        return gr.skip(), gr.skip(), tr("dl.pick", lang)
    try:
        status = rt.models.downloads.start(text, name, token=secret or None, mmproj=bool(with_mmproj))
    except EngineError as exc:
        warn(exc.message)
        return None, gr.Timer(active=False), tr("dl.failed", lang, error=escape_text(exc.message))
    return status.id, gr.Timer(active=True), progress_text(status, lang)


def tick(rt: Runtime, job_id: str | None, lang: str | None) -> tuple[Any, Any, Any]:
    """(the timer, the progress, the picker): once done, the new file is in the picker and picked."""
    if not job_id:
        return gr.Timer(active=False), gr.skip(), gr.skip()
    try:
        status = rt.models.downloads.get(job_id)
    except EngineError as exc:
        return gr.Timer(active=False), escape_text(exc.message), gr.skip()
    picked = gr.skip()
    if status.state == "done":
        models = rt.models.files()
        picked = gr.update(choices=[(_model_label(m), m.name) for m in models], value=status.name)
    running = status.state in ("downloading", "verifying")
    return gr.Timer(active=running), progress_text(status, lang), picked


def cancel(rt: Runtime, job_id: str | None, lang: str | None) -> Any:
    if not job_id:
        return gr.skip()
    try:
        return progress_text(rt.models.downloads.cancel(job_id), lang)
    except EngineError as exc:
        return escape_text(exc.message)


def build_downloads(ctx: UIContext, *, picker: gr.Dropdown) -> None:
    """The "Download from Hugging Face" section; a finished download becomes the picked model file."""
    with gr.Accordion(I18N("dl.title"), open=False, elem_id="dl-section"):
        with gr.Row(equal_height=True):
            repo = gr.Textbox(
                label=I18N("dl.repo"),
                placeholder="bartowski/SmolLM2-135M-Instruct-GGUF",
                elem_id="dl-repo",
                scale=3,
            )
            token = gr.Textbox(label=I18N("dl.token"), type="password", elem_id="dl-token", scale=2)
            list_btn = gr.Button(I18N("dl.list"), scale=0, min_width=140, elem_id="dl-list")
        files = gr.Dropdown(label=I18N("dl.file"), choices=[], elem_id="dl-file")
        mmproj = gr.Checkbox(False, visible=False, elem_id="dl-mmproj")
        with gr.Row():
            start_btn = gr.Button(I18N("dl.start"), variant="primary", elem_id="dl-start")
            cancel_btn = gr.Button(I18N("dl.cancel"), variant="stop", elem_id="dl-cancel")
        progress = gr.Markdown(elem_id="dl-progress")
    job = gr.State(None)
    offered = gr.State({})  # file name -> the projectors offered with it
    timer = gr.Timer(TICK_S, active=False)
    lang = ctx.lang
    for trigger in (list_btn.click, repo.submit):
        trigger(partial(list_files, ctx.rt), [repo, token, lang], [files, offered, mmproj, progress])
    files.input(projector, [files, offered, lang], [mmproj], show_progress="hidden")
    start_btn.click(partial(start, ctx.rt), [repo, files, mmproj, token, lang], [job, timer, progress])
    timer.tick(partial(tick, ctx.rt), [job, lang], [timer, progress, picker], show_progress="hidden")
    cancel_btn.click(partial(cancel, ctx.rt), [job, lang], [progress])


def _label(m: Any) -> str:
    parts = [m.name, gib(m.size_bytes)]
    if m.quantization:
        parts.append(m.quantization)
    if m.parts > 1:
        parts.append(f"{m.parts} parts")
    if m.kind == "mmproj":
        parts.append("projector")
    return " · ".join(parts)


def _model_label(m: Any) -> str:
    from .gpu import model_label  # the picker's own labels (gpu imports this module)

    return str(model_label(m))
