"""GPU & models tab: device readout, live plots (VRAM and utilisation with a GPU; the engine's CPU use and
the server's and model process's memory always), and loading another GGUF model."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import gradio as gr
import pandas as pd

from engine import EngineError

from .. import i18n
from ..i18n import I18N, tr
from ..markup import warn
from . import downloads
from .chat import load_session, status_line
from .context import ChatView, UIContext

TICK_S = 2.0

i18n.add(
    {
        "tab.gpu": "GPU & models",
        "gpu.live": "Live updates (every 2 s)",
        "gpu.refresh": "Refresh",
        "gpu.plot_vram": "VRAM used (MB), last minutes",
        "gpu.plot_util": "GPU utilisation (%), last minutes",
        "gpu.cpu": "**Running on CPU.** {reason}",
        "gpu.no_cuda": "This llama-cpp-python build cannot offload to a GPU (no CUDA support).",
        "gpu.count": "**{n} GPU(s) found.** llama.cpp GPU offload: {cuda}.",
        "gpu.plot_cpu": "No GPU: the plots show the engine's CPU use and the memory of the server and model.",
        "gpu.plot_sys_cpu": "Engine CPU use (% of one core), last minutes",
        "gpu.plot_sys_rss": "Memory (RSS, MB), last minutes",
        "gpu.series_cpu": "model process",
        "gpu.series_server": "server",
        "gpu.series_model": "model process",
        "gpu.series_both": "server with the model",
        "gpu.readout": "Now: engine CPU {cpu}% · server {server} MB · model process {model} MB",
        "gpu.readout_one": "Now: engine CPU {cpu}% · server with the model {server} MB",
        "gpu.plot_wait": "Samples appear here every 2 s while this tab is open.",
        "gpu.col.index": "GPU",
        "gpu.col.name": "Name",
        "gpu.col.vram": "VRAM used / total (MB)",
        "gpu.col.util": "Utilisation %",
        "gpu.col.temp": "Temperature °C",
        "gpu.col.power": "Power W (limit)",
        "gpu.col.proc": "This process (MB)",
        "gpu.yes": "yes",
        "gpu.no": "no",
        "gpu.unknown": "unknown",
        "gpu.model": "**Model:** {name} · {arch} · context {n_ctx} tokens",
        "gpu.no_model": "**No model loaded.** {error}",
        "gpu.offload_all": "Offload: {n}/{total} layers on the GPU.",
        "gpu.offload_some": "Offload: {n}/{total} layers on the GPU, the rest on the CPU.",
        "gpu.offload_none": "Offload: none, every layer runs on the CPU ({why}).",
        "gpu.why_build": "this build has no GPU support",
        "gpu.why_zero": "n_gpu_layers is 0",
        "gpu.why_nogpu": "no usable GPU",
        "gpu.memory": "Process memory: {rss} MB resident (peak {peak} MB).",
        "gpu.load_time": "Loaded in {s} s.",
        "gpu.worker": "Model process: {state}, pid {pid}, {restarts} restarts; last exit: {last}.",
        "gpu.safe_mode": "Safe mode: {reason}.",
        "gpu.slots": "Slots: {busy}/{n} busy (cached tokens and the chat they hold: {each}).",
        "gpu.slot_other": "a chat without a session",
        "gpu.models": "Models",
        "gpu.model_file": "Model file (in {dir})",
        "gpu.rescan": "Rescan folder",
        "gpu.n_gpu_layers": "GPU layers (n_gpu_layers)",
        "gpu.n_gpu_layers_info": "-1 offloads every layer, 0 keeps the model on the CPU.",
        "gpu.n_ctx": "Context window (n_ctx)",
        "gpu.n_ctx_info": "Tokens the model can see; 256 to 1048576. More needs more memory.",
        "gpu.flash_attn": "Flash attention",
        "gpu.cache_k": "KV cache type K",
        "gpu.cache_v": "KV cache type V",
        "gpu.load": "Load model",
        "gpu.loading": "⏳ Loading {name}… the current model answers until the new one is ready.",
        "gpu.loaded": "✅ Loaded **{name}** in {s} s. Process memory: {rss} MB resident (peak {peak} MB).",
        "gpu.failed": "❌ {message} The previous model stays loaded.",
        "gpu.pick": "Pick a model file first.",
        "gpu.no_files": "No .gguf files in {dir}. Put a model there and press Rescan.",
        "gpu.meta": "{arch} · {params} parameters · {quant} · trained context {ctx} · chat template: {tmpl}",
        "gpu.meta_error": "⚠ {error}",
    },
    {
        "tab.gpu": "GPU とモデル",
        "gpu.live": "ライブ更新（2 秒ごと）",
        "gpu.refresh": "更新",
        "gpu.plot_vram": "VRAM 使用量（MB）直近数分",
        "gpu.plot_util": "GPU 使用率（%）直近数分",
        "gpu.cpu": "**CPU で動作中。** {reason}",
        "gpu.no_cuda": "この llama-cpp-python は GPU オフロードに対応していません（CUDA なし）。",
        "gpu.count": "**GPU を {n} 台検出。** llama.cpp の GPU オフロード：{cuda}。",
        "gpu.plot_cpu": "GPU がありません。エンジンの CPU 使用率と、サーバーとモデルのメモリを表示します。",
        "gpu.plot_sys_cpu": "エンジンの CPU 使用率（1 コア = 100%）直近数分",
        "gpu.plot_sys_rss": "メモリ（RSS、MB）直近数分",
        "gpu.series_cpu": "モデルのプロセス",
        "gpu.series_server": "サーバー",
        "gpu.series_model": "モデルのプロセス",
        "gpu.series_both": "サーバー（モデルを含む）",
        "gpu.readout": "現在：エンジン CPU {cpu}% · サーバー {server} MB · モデルのプロセス {model} MB",
        "gpu.readout_one": "現在：エンジン CPU {cpu}% · サーバー（モデルを含む）{server} MB",
        "gpu.plot_wait": "このタブを開いている間、2 秒ごとにサンプルが追加されます。",
        "gpu.col.index": "GPU",
        "gpu.col.name": "名前",
        "gpu.col.vram": "VRAM 使用量 / 合計（MB）",
        "gpu.col.util": "使用率 %",
        "gpu.col.temp": "温度 °C",
        "gpu.col.power": "電力 W（上限）",
        "gpu.col.proc": "このプロセス（MB）",
        "gpu.yes": "可",
        "gpu.no": "不可",
        "gpu.unknown": "不明",
        "gpu.model": "**モデル：** {name} · {arch} · コンテキスト {n_ctx} トークン",
        "gpu.no_model": "**モデルが読み込まれていません。** {error}",
        "gpu.offload_all": "オフロード：{n}/{total} 層すべてを GPU で実行。",
        "gpu.offload_some": "オフロード：{n}/{total} 層を GPU、残りを CPU で実行。",
        "gpu.offload_none": "オフロードなし：すべての層を CPU で実行（{why}）。",
        "gpu.why_build": "このビルドは GPU 非対応",
        "gpu.why_zero": "n_gpu_layers が 0",
        "gpu.why_nogpu": "使える GPU がありません",
        "gpu.memory": "プロセスのメモリ：常駐 {rss} MB（ピーク {peak} MB）。",
        "gpu.load_time": "読み込み時間 {s} 秒。",
        "gpu.worker": "モデルプロセス: {state}、pid {pid}、再起動 {restarts} 回、最後の終了: {last}。",
        "gpu.safe_mode": "セーフモード: {reason}。",
        "gpu.slots": "スロット: {n} 中 {busy} 使用中（キャッシュ済みトークンと保持中のチャット: {each}）。",
        "gpu.slot_other": "セッションのないチャット",
        "gpu.models": "モデル",
        "gpu.model_file": "モデルファイル（{dir} 内）",
        "gpu.rescan": "フォルダーを再読み込み",
        "gpu.n_gpu_layers": "GPU 層数 (n_gpu_layers)",
        "gpu.n_gpu_layers_info": "-1 ですべての層をオフロード、0 で CPU のみ。",
        "gpu.n_ctx": "コンテキスト長 (n_ctx)",
        "gpu.n_ctx_info": "モデルが参照できるトークン数（256〜1048576）。大きいほどメモリを使います。",
        "gpu.flash_attn": "Flash attention",
        "gpu.cache_k": "KV キャッシュ型 K",
        "gpu.cache_v": "KV キャッシュ型 V",
        "gpu.load": "モデルを読み込む",
        "gpu.loading": "⏳ {name} を読み込み中… 準備ができるまで現在のモデルが応答します。",
        "gpu.loaded": (
            "✅ **{name}** を {s} 秒で読み込みました。プロセスのメモリ：常駐 {rss} MB（ピーク {peak} MB）。"
        ),
        "gpu.failed": "❌ {message} 以前のモデルが読み込まれたままです。",
        "gpu.pick": "先にモデルファイルを選んでください。",
        "gpu.no_files": "{dir} に .gguf ファイルがありません。モデルを置いて再読み込みを押してください。",
        "gpu.meta": (
            "{arch} · パラメーター {params} · {quant} · "
            "学習時コンテキスト {ctx} · チャットテンプレート：{tmpl}"
        ),
        "gpu.meta_error": "⚠ {error}",
    },
)

PLOT_COLUMNS = ["time", "series", "value"]
_sampled = {"at": 0.0, "sys": 0.0}
_sample_lock = threading.Lock()


def _v(value: Any) -> Any:
    return "—" if value is None else value


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def model_label(m: Any) -> str:
    """A model file (engine/models.py) in the picker: name, size, quant, parameters."""
    parts = [m.name, _size(m.size_bytes)]
    parts += [p for p in (m.quantization, m.size_label) if p]
    return " · ".join(parts)


def status_view(status: dict[str, Any], lang: str | None) -> tuple[str, Any]:
    """Summary Markdown and the device table."""
    cuda = status.get("cuda_build")
    if not status.get("available"):
        text = tr("gpu.cpu", lang, reason=status.get("reason") or "")
        if cuda is False:
            text += " " + tr("gpu.no_cuda", lang)
    else:
        flag = tr("gpu.unknown", lang) if cuda is None else tr("gpu.yes" if cuda else "gpu.no", lang)
        text = tr("gpu.count", lang, n=len(status["devices"]), cuda=flag)
    headers = [tr(f"gpu.col.{c}", lang) for c in ("index", "name", "vram", "util", "temp", "power", "proc")]
    rows = []
    for d in status.get("devices", []):
        power = _v(d.get("power_w"))
        if d.get("power_limit_w") is not None:
            power = f"{power} ({d['power_limit_w']})"
        vram = f"{_v(d.get('vram_used_mb'))} / {_v(d.get('vram_total_mb'))}"
        rows.append(
            [
                d.get("index"),
                _v(d.get("name")),
                vram,
                _v(d.get("utilization_pct")),
                _v(d.get("temperature_c")),
                power,
            ]
            + [_v(d.get("process_vram_mb"))]
        )
    return text, gr.update(value={"headers": headers, "data": rows}, visible=bool(rows))


def model_view(rt: Any, lang: str | None) -> str:
    """Markdown about the loaded model: name, context, layers offloaded, load time, process memory."""
    info, cuda, mem = rt.model_info(), rt.gpu_status().get("cuda_build"), rt.process_memory()
    memory = tr("gpu.memory", lang, rss=_v(mem["rss_mb"]), peak=_v(mem["peak_mb"]))
    if not info.get("loaded"):
        return f"- {tr('gpu.no_model', lang, error=info.get('error') or '')}\n- {memory}"
    lines = [
        tr(
            "gpu.model",
            lang,
            name=info.get("name"),
            arch=_v(info.get("architecture")),
            n_ctx=_v(info.get("n_ctx")),
        )
    ]
    total, wanted = info.get("n_layers"), info.get("n_gpu_layers")
    if total and wanted is not None:
        if info.get("gpu_offload"):
            n = total if wanted < 0 or wanted >= total else wanted
            lines.append(tr("gpu.offload_all" if n == total else "gpu.offload_some", lang, n=n, total=total))
        else:
            key = "gpu.why_zero" if wanted == 0 else ("gpu.why_build" if cuda is False else "gpu.why_nogpu")
            why = tr(key, lang)
            lines.append(tr("gpu.offload_none", lang, why=why))
    if info.get("load_s") is not None:
        lines.append(tr("gpu.load_time", lang, s=info["load_s"]))
    lines += worker_lines(info.get("worker"), lang)
    lines.append(memory)
    return "\n".join(f"- {line}" for line in lines)


def worker_lines(worker: dict[str, Any] | None, lang: str | None) -> list[str]:
    """The model process's state, restarts and last exit, its slots (busy or free, cached tokens and the
    chat whose tokens they are), and safe mode when it is on."""
    if not worker:
        return []
    last = (worker.get("last_exit") or {}).get("reason") or "–"
    lines = [
        tr(
            "gpu.worker",
            lang,
            state=worker["state"],
            pid=_v(worker.get("pid")),
            restarts=worker["restarts"],
            last=last,
        )
    ]
    slots = worker.get("slots") or []
    if slots:
        each = ", ".join(_slot_text(s, lang) for s in slots)
        lines.append(tr("gpu.slots", lang, busy=sum(1 for s in slots if s["busy"]), n=len(slots), each=each))
    if worker.get("safe_mode"):
        lines.append(tr("gpu.safe_mode", lang, reason=worker["safe_mode"]["reason"]))
    if worker.get("reason"):
        lines.append(str(worker["reason"]))
    return lines


def _slot_text(slot: dict[str, Any], lang: str | None) -> str:
    """`#0 ● 120 s-…`: id, busy (●) or free (○), cached tokens, and the chat: its session id, or a note
    for tokens of a request without a session (the API's stateless chats)."""
    text = f"#{slot['id']} {'●' if slot['busy'] else '○'} {slot['cached_tokens']}"
    if slot.get("chat"):
        return f"{text} {slot['chat']}"
    return f"{text} ({tr('gpu.slot_other', lang)})" if slot["cached_tokens"] else text


def plot_frames(rt: Any, available: bool) -> tuple[Any, Any]:
    """(VRAM frame, utilisation frame), or hidden plots without a GPU. With a GPU but no samples yet: None,
    because a LinePlot first drawn from an empty frame stays blank after updates."""
    if not available:
        return gr.update(visible=False), gr.update(visible=False)
    frames = []
    for metric in ("vram_used_mb", "utilization_pct"):
        rows = rt.gpu_history.rows(metric)
        frames.append(
            gr.update(value=pd.DataFrame(rows, columns=PLOT_COLUMNS) if rows else None, visible=True)
        )
    return frames[0], frames[1]


def sample_once(rt: Any, status: dict[str, Any]) -> None:
    """Add one sample unless another browser did so moments ago (several open tabs share the history)."""
    with _sample_lock:
        now = time.monotonic()
        if now - _sampled["at"] >= TICK_S * 0.8:
            rt.gpu_history.sample(status)
            _sampled["at"] = now


def model_pid(rt: Any) -> int:
    """The model process: the worker's pid where the model has one, else this (the server's) process."""
    worker = rt.health().get("worker") or {}
    pid = worker.get("pid") if isinstance(worker, dict) else None
    return pid if isinstance(pid, int) and pid > 0 else os.getpid()


def sample_system(rt: Any) -> None:
    """One CPU/RSS sample, shared by every open tab like the GPU's. The first comes with a second a moment
    later, so the CPU plot has a point at once."""
    history = rt.process_history
    with _sample_lock:
        now = time.monotonic()
        if now - _sampled.get("sys", 0.0) < TICK_S * 0.8:
            return
        _sampled["sys"] = now
        first = len(history) == 0
        history.sample(os.getpid(), model_pid(rt))
        if first:
            time.sleep(0.25)
            history.sample(os.getpid(), model_pid(rt))


def system_frames(rt: Any, lang: str | None) -> tuple[Any, Any, str]:
    """(CPU frame, RSS frame, readout line) for the engine's CPU use and the processes' memory."""
    history = rt.process_history
    one = model_pid(rt) == os.getpid()
    labels = {
        "cpu": tr("gpu.series_cpu", lang),
        "server": tr("gpu.series_both" if one else "gpu.series_server", lang),
        "model": tr("gpu.series_model", lang),
    }
    frames = []
    for metric in ("cpu", "rss"):
        rows = history.rows(metric, labels)
        frames.append(pd.DataFrame(rows, columns=PLOT_COLUMNS) if rows else None)
    cpu, server, model = history.latest()
    key = "gpu.readout_one" if one else "gpu.readout"
    readout = tr(key, lang, cpu=_v(cpu), server=_v(server), model=_v(model))
    return frames[0], frames[1], readout


def line_plot(label_key: str, elem_id: str, visible: bool = True) -> gr.LinePlot:
    return gr.LinePlot(
        None,
        x="time",
        y="value",
        color="series",
        label=I18N(label_key),
        x_title="",
        y_title="",
        x_axis_format="%H:%M:%S",
        elem_id=elem_id,
        visible=visible,
    )


class Monitor:
    """The device readout and the live plots, ticking while the tab is shown."""

    def __init__(self, ctx: UIContext) -> None:
        self.rt, self.lang = ctx.rt, ctx.lang
        with gr.Row(equal_height=True):
            self.summary = gr.Markdown(elem_id="gpu-summary")
            self.live = gr.Checkbox(True, label=I18N("gpu.live"), scale=0, min_width=220, elem_id="gpu-live")
            self.refresh_btn = gr.Button(
                I18N("gpu.refresh"), size="sm", scale=0, min_width=100, elem_id="gpu-refresh"
            )
        self.devices = gr.Dataframe(interactive=False, elem_id="gpu-devices", max_height=200, visible=False)
        with gr.Row():
            has_gpu = bool(self.rt.gpu_status().get("available"))
            self.plots = [
                line_plot(f"gpu.plot_{kind}", f"gpu-plot-{kind}", has_gpu) for kind in ("vram", "util")
            ]
        with gr.Row():
            self.sys_plots = [
                line_plot(f"gpu.plot_sys_{kind}", f"sys-plot-{kind}") for kind in ("cpu", "rss")
            ]
        self.plot_note = gr.Markdown(elem_id="gpu-plot-note")
        self.readout = gr.Markdown(elem_id="sys-readout")
        self.model_md = gr.Markdown(elem_id="gpu-model")
        self.timer = gr.Timer(TICK_S, active=False)

    @property
    def tick_outs(self) -> list[Any]:
        return [self.summary, self.devices, *self.plots, *self.sys_plots, self.readout, self.plot_note]

    def note_for(self, status: dict[str, Any], lang_value: str | None) -> str:
        if not status.get("available"):
            return tr("gpu.plot_cpu", lang_value)
        return "" if len(self.rt.gpu_history) > 1 else tr("gpu.plot_wait", lang_value)

    def tick(self, lang_value: str | None):
        rt = self.rt
        status = rt.gpu_status()
        if status.get("available"):
            sample_once(rt, status)
        sample_system(rt)
        text, table = status_view(status, lang_value)
        return (
            text,
            table,
            *plot_frames(rt, bool(status.get("available"))),
            *system_frames(rt, lang_value),
            self.note_for(status, lang_value),
        )

    def refresh(self, lang_value: str | None):
        info = model_view(self.rt, lang_value)
        return (*self.tick(lang_value), info)

    def timer_state(self, evt: gr.SelectData, on: bool):
        """The timer ticks only while this tab is shown and live updates are on."""
        shown = (getattr(evt, "_data", None) or {}).get("id") == "gpu"
        return gr.Timer(active=bool(shown and on))

    def live_changed(self, on: bool):
        return gr.Timer(active=bool(on))

    def wire(self, tabs: gr.Tabs) -> None:
        lang = self.lang
        self.refresh_btn.click(self.refresh, [lang], [*self.tick_outs, self.model_md])
        self.timer.tick(self.tick, [lang], self.tick_outs, show_progress="hidden")
        tabs.select(self.timer_state, [self.live], [self.timer], show_progress="hidden")
        self.live.input(self.live_changed, [self.live], [self.timer], show_progress="hidden")


class ModelPanel:
    """The model files, their load settings, the memory estimate and downloads, and Load."""

    def __init__(self, ctx: UIContext) -> None:
        self.ctx, self.rt = ctx, ctx.rt
        model_cfg = self.rt.settings.model
        with gr.Accordion(I18N("gpu.models"), open=True):
            self.picker = gr.Dropdown(label=I18N("gpu.model_file"), elem_id="gpu-model-file")
            with gr.Row(equal_height=True):
                self.meta = gr.Markdown(elem_id="gpu-model-meta")
                self.rescan = gr.Button(
                    I18N("gpu.rescan"), size="sm", scale=0, min_width=180, elem_id="gpu-rescan"
                )
            with gr.Row():
                self.n_gpu_layers = gr.Number(
                    model_cfg.n_gpu_layers,
                    label=I18N("gpu.n_gpu_layers"),
                    info=I18N("gpu.n_gpu_layers_info"),
                    precision=0,
                    elem_id="gpu-ngl",
                )
                self.n_ctx = gr.Number(
                    model_cfg.n_ctx,
                    label=I18N("gpu.n_ctx"),
                    info=I18N("gpu.n_ctx_info"),
                    precision=0,
                    elem_id="gpu-nctx",
                )
            with gr.Row():
                self.flash = gr.Checkbox(
                    model_cfg.flash_attn, label=I18N("gpu.flash_attn"), elem_id="gpu-flash"
                )
                self.cache_k = gr.Dropdown(
                    list(model_cfg.kv_types), value=model_cfg.cache_type_k, label=I18N("gpu.cache_k")
                )
                self.cache_v = gr.Dropdown(
                    list(model_cfg.kv_types), value=model_cfg.cache_type_v, label=I18N("gpu.cache_v")
                )
            fields = (self.n_gpu_layers, self.n_ctx, self.flash, self.cache_k, self.cache_v)
            downloads.build_estimate(ctx, picker=self.picker, fields=fields)
            self.load_btn = gr.Button(I18N("gpu.load"), variant="primary", elem_id="gpu-load")
            self.load_status = gr.Markdown(elem_id="gpu-load-status")
            downloads.build_downloads(ctx, picker=self.picker)

    def models(self, current: str | None, lang_value: str | None):
        rt = self.rt
        files = rt.models.files()
        loaded = rt.model_info().get("name") if rt.model_info().get("loaded") else None
        names = [m.name for m in files]
        value = (
            current if current in names else (loaded if loaded in names else (names[0] if names else None))
        )
        label = tr("gpu.model_file", lang_value, dir=rt.models_dir)
        return gr.update(
            choices=[(model_label(m), m.name) for m in files], value=value, label=label
        ), self.describe(value, lang_value)

    def describe(self, name: str | None, lang_value: str | None) -> str:
        rt = self.rt
        files = {m.name: m for m in rt.models.files()}
        m = files.get(name or "")
        if m is None:
            return tr("gpu.no_files", lang_value, dir=rt.models_dir) if not files else ""
        if m.error:
            return tr("gpu.meta_error", lang_value, error=m.error)
        unknown = tr("gpu.unknown", lang_value)
        return tr(
            "gpu.meta",
            lang_value,
            arch=m.architecture or unknown,
            params=m.size_label or unknown,
            quant=m.quantization or unknown,
            ctx=m.context_length or unknown,
            tmpl=tr("gpu.yes" if m.has_chat_template else "gpu.no", lang_value),
        )

    def load(self, name, ngl, ctx_len, fa, ck, cv, session_id, lang_value):
        """Yields (load status, model readout, the chat tab's status line)."""
        rt = self.rt
        if not name:
            warn(tr("gpu.pick", lang_value))
            yield gr.skip()
            return
        yield tr("gpu.loading", lang_value, name=name), gr.skip(), gr.skip()
        overrides = {
            "n_gpu_layers": ngl,
            "n_ctx": ctx_len,
            "flash_attn": fa,
            "cache_type_k": ck,
            "cache_type_v": cv,
        }
        overrides = {k: int(v) if isinstance(v, float) else v for k, v in overrides.items() if v is not None}
        try:
            info = rt.models.load(name, **overrides)  # remembers the settings when it loads
        except EngineError as exc:
            warn(exc.message)
            yield tr("gpu.failed", lang_value, message=exc.message), gr.skip(), gr.skip()
            return
        mem = rt.process_memory()
        text = tr(
            "gpu.loaded",
            lang_value,
            name=name,
            s=_v(info.get("load_s")),
            rss=_v(mem["rss_mb"]),
            peak=_v(mem["peak_mb"]),
        )
        chat_status = status_line(self.ctx, load_session(self.ctx, session_id), lang_value)
        yield text, model_view(rt, lang_value), chat_status

    def wire(self, model_md: gr.Markdown, chat: ChatView) -> None:
        lang = self.ctx.lang
        self.rescan.click(self.models, [self.picker, lang], [self.picker, self.meta])
        self.picker.change(self.describe, [self.picker, lang], [self.meta])
        settings = [self.n_gpu_layers, self.n_ctx, self.flash, self.cache_k, self.cache_v]
        self.load_btn.click(
            self.load,
            [self.picker, *settings, self.ctx.session_id, lang],
            [self.load_status, model_md, chat.status],
            concurrency_limit=1,
            concurrency_id="model-load",
        )


def build(ctx: UIContext, tab: gr.Tab, chat: ChatView, tabs: gr.Tabs) -> None:
    """The GPU & models tab. `tabs` tells the live plots when this tab is shown; a load updates `chat`'s
    status line."""
    monitor, panel = Monitor(ctx), ModelPanel(ctx)
    lang = ctx.lang
    tab.select(monitor.refresh, [lang], [*monitor.tick_outs, monitor.model_md], show_progress="hidden")
    tab.select(panel.models, [panel.picker, lang], [panel.picker, panel.meta], show_progress="hidden")
    monitor.wire(tabs)
    panel.wire(monitor.model_md, chat)
