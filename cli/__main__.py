"""python -m cli: chat in the terminal, with the engine in this process or with a server (--url)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from engine import EngineError

from .app import App
from .clients import ChatClient, ChatState
from .commands import parse_assignments
from .render import Output

DESCRIPTION = """\
Chat with a local model in the terminal. By default the engine runs in this process (the model is
loaded from --model or the config); with --url it talks to a running server (python -m webui).
Chats are saved every turn in the same store and format as the web UI, so they open in either.
On a pipe (echo "hello" | python -m cli) it reads one message or /command a line and prints plain text.
"""

EPILOG = """\
examples:
  python -m cli
  python -m cli --preset friendly -p temperature=0.3
  python -m cli --url http://127.0.0.1:7860 --session s-20250131-120000-a1b2c3
  printf '/params max_tokens=64\\nWhat is GGUF?\\n' | python -m cli
  python -m cli --pull bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M

Type /help in the chat for the commands."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m cli",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (default config/model_config.yaml). Direct mode only.")
    p.add_argument("--data-dir", help="Where chats, presets and logs live (default: the config's data_dir).")
    p.add_argument("--model", help="GGUF file to load: a name in models/ or a path. Direct mode only.")
    p.add_argument("--url", help="Use a running server (http://127.0.0.1:7860) instead of a local model.")
    p.add_argument("--api-key", help="Bearer key for a server started with --api-key.")
    p.add_argument("--preset", help="Character preset for the new chat (see /system).")
    p.add_argument("--session", metavar="ID", help="Resume a saved chat.")
    p.add_argument("--persona", help="Who you are ({{user}}): a persona's name (see /persona).")
    p.add_argument("--lorebook", action="append", default=[], help="Attach a lorebook (repeatable).")
    p.add_argument("--reply-prefix", help="Every reply starts with this text.")
    p.add_argument(
        "--pull",
        metavar="REPO[:FILE]",
        help="Download a GGUF model from Hugging Face into models/ (or the server's, with --url) and exit: "
        "owner/name, owner/name:Q4_K_M, owner/name:file.gguf or a huggingface.co link. "
        "HF_TOKEN for gated repos.",
    )
    p.add_argument("--mmproj", action="store_true", help="With --pull: also the repo's vision projector.")
    p.add_argument("--hide-thinking", action="store_true", help="Do not show a thinking model's thought.")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Sampling parameter for new chats, as with /params (repeatable): -p max_tokens=100 -p seed=1",
    )
    return p.parse_args(argv)


def direct_client(args: argparse.Namespace, out: Output) -> ChatClient:
    from engine import ConfigError, Runtime, load_settings

    from .direct import DirectClient

    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.model:
        overrides["model"] = {"path": args.model}
    settings, warnings = load_settings(args.config, overrides=overrides)
    if args.model:  # a bare file name means the file in models/
        m, models = Path(args.model), settings.resolve(settings.models_dir)
        if not m.is_absolute() and not m.exists() and (models / m.name).exists():
            settings.model.path = str(models / m.name)
    for warning in warnings:
        out.hint(f"warning: {warning}")
    rt = Runtime(settings, warnings=warnings)
    refused = rt.start_refusal()
    if refused:  # gpu.required: never on the CPU
        rt.close()
        raise ConfigError(refused)
    if rt.engine.load_error:
        out.error(rt.engine.load_error)
    return DirectClient(rt)


def remote_client(args: argparse.Namespace, out: Output) -> ChatClient:
    from .remote import HttpClient

    ignored = [f"--{k.replace('_', '-')}" for k in ("config", "data_dir", "model") if getattr(args, k)]
    if ignored:
        out.hint(f"{', '.join(ignored)} ignored: with --url the server's settings and data are used.")
    client = HttpClient(args.url, args.api_key)
    health = client.health()  # fails early, with one line, when the server is not there
    client.presets()  # ... or wants an API key (/api/health needs none)
    model = health.get("model") or {}
    if not model.get("loaded"):
        out.error(f"The server has no model loaded: {model.get('error') or 'unknown reason'}")
    return client


def banner(client: ChatClient, out: Output) -> None:
    model = (client.health().get("model") or {}).get("name") or "no model"
    mode = "engine in this process" if client.kind == "direct" else f"server {client.where}"
    out.info(f"{model} · {mode} · /help for commands · Ctrl+C stops a reply")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("engine").addHandler(logging.NullHandler())  # warnings are shown once, by us
    # Ctrl+C must work even when started with SIGINT ignored (a parent that ignores it, nohup): an ignored
    # signal stays ignored across exec, and Python then installs no handler of its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    out = Output(tty=interactive)
    if args.api_key and not args.url:
        out.hint("--api-key ignored: it is for --url.")
    if args.pull:
        from .pull import pull

        return pull(
            args.pull, out, config=args.config, url=args.url, api_key=args.api_key, mmproj=args.mmproj
        )
    try:
        params = ChatState()
        for item in args.param:
            params.set_params(parse_assignments(shlex.quote(item)))
        client = remote_client(args, out) if args.url else direct_client(args, out)
    except EngineError as exc:
        out.error(exc.message)
        return 2
    options: dict[str, object] = {}
    if args.persona:
        options["persona"] = args.persona
    if args.lorebook:
        options["lorebooks"] = list(args.lorebook)
    if args.reply_prefix is not None:
        options["reply_prefix"] = args.reply_prefix
    app = App(client, out, interactive=interactive, params=params.params)
    app.hide_thinking = args.hide_thinking
    try:
        if interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
            banner(client, out)
        app.start(args.preset or client.state.preset, args.session)
        client.state.options.update(options)  # after start: opening a saved chat resets them
    except EngineError as exc:
        out.error(exc.message)
        client.close()
        return 2
    return app.run()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl+C while the model loads
        sys.exit(130)
    except BrokenPipeError:  # e.g. | head: stop quietly
        sys.stderr.close()
        sys.exit(0)
