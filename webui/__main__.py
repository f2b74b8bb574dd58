"""python -m webui [--host 127.0.0.1] [--port 7860] [--config PATH] [--data-dir DIR] [--model PATH]
[--backend llama_cpp|openai] [--backend-url URL] [--backend-key KEY] [--api-key KEY] [--auth user:pass]
[--cors-origin URL] [--allowed-host NAME] [--insecure-lan]"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import ipaddress
import logging
import signal
import sys
from typing import TYPE_CHECKING

from engine import ConfigError

if TYPE_CHECKING:
    from engine import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m webui", description="Local LLM chat: UI, REST API, OpenAI API."
    )
    p.add_argument("--host", help="Address to bind (default 127.0.0.1, loopback only).")
    p.add_argument("--port", type=int, help="Port (default 7860).")
    p.add_argument("--config", help="YAML config (default config/model_config.yaml).")
    p.add_argument("--data-dir", help="Where sessions, presets and logs live (default data).")
    p.add_argument("--model", help="GGUF file to load (a name in models/ or a path).")
    p.add_argument("--backend", choices=["llama_cpp", "openai"], help="Embedded model or a remote server.")
    p.add_argument("--backend-url", help="Base URL of an OpenAI-compatible server (with --backend openai).")
    p.add_argument("--backend-key", help="API key for the remote server.")
    p.add_argument(
        "--api-key",
        help="Require 'Authorization: Bearer KEY' on /api and /v1; also the UI's login password "
        "(or LLM_SERVER__API_KEY).",
    )
    p.add_argument(
        "--auth",
        help="'user:pass' login for the UI; also HTTP basic auth on /api and /v1 (or LLM_SERVER__AUTH).",
    )
    p.add_argument(
        "--cors-origin", action="append", default=None, help="Allow this browser origin (repeatable)."
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        help="Also answer to this host name, e.g. chat.lan (repeatable; localhost and IPs need none).",
    )
    p.add_argument(
        "--insecure-lan",
        action="store_true",
        default=None,
        help="Bind a non-loopback --host without both --auth and --api-key (anyone on the network gets in).",
    )
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, dict[str, object]] = {"server": {}, "backend": {}, "model": {}}
    for key in ("host", "port", "api_key", "auth", "insecure_lan"):
        if getattr(args, key) is not None:
            out["server"][key] = getattr(args, key)
    if args.cors_origin:
        out["server"]["cors_origins"] = args.cors_origin
    if args.allowed_host:
        out["server"]["allowed_hosts"] = args.allowed_host
    if args.backend:
        out["backend"]["kind"] = args.backend
    if args.backend_url:
        out["backend"]["url"] = args.backend_url
        out["backend"].setdefault("kind", "openai")
    if args.backend_key:
        out["backend"]["api_key"] = args.backend_key
    if args.model:
        out["model"]["path"] = args.model
    merged: dict[str, object] = {k: v for k, v in out.items() if v}
    if args.data_dir:
        merged["data_dir"] = args.data_dir
    return merged


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LAN_HELP = (
    "Pass both --auth user:pass (the UI login) and --api-key KEY (the API), or bind to 127.0.0.1. "
    "--insecure-lan starts anyway."
)
LAN_RISK = "Anyone who can reach this machine can use the model and read or change your chats."


def exposure_problem(settings: Settings) -> str | None:
    """Why binding `server.host` exposes the chat, or None (a loopback bind, or both credentials set)."""
    server = settings.server
    if is_loopback(server.host) or (server.auth and server.api_key):
        return None
    missing = " and ".join(
        name for name, value in (("--auth", server.auth), ("--api-key", server.api_key)) if not value
    )
    return f"binding to {server.host} exposes the chat to your network without {missing}."


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from engine import load_settings

    try:
        settings, warnings = load_settings(args.config, overrides=overrides_from(args))
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if settings.model.path and args.model:
        from pathlib import Path

        m = Path(args.model)
        if (
            not m.is_absolute()
            and not m.exists()
            and (settings.resolve(settings.models_dir) / m.name).exists()
        ):
            settings.model.path = str(settings.resolve(settings.models_dir) / m.name)
    host = settings.server.host
    problem = exposure_problem(settings)
    if problem and not settings.server.insecure_lan:
        print(f"error: {problem}\n  {LAN_HELP}", file=sys.stderr)
        return 2
    if problem:
        print("\n" + "!" * 78 + f"\n  WARNING: {problem}\n  {LAN_RISK}\n" + "!" * 78 + "\n", file=sys.stderr)
    import threading

    # Gradio takes seconds to import; the model loads in its own process meanwhile.
    ui_import = threading.Thread(target=lambda: importlib.import_module("webui.app"), daemon=True)
    ui_import.start()
    import uvicorn

    from engine import Runtime

    rt = Runtime(settings, warnings=warnings)
    ui_import.join()
    from .app import create_app

    refused = rt.start_refusal()
    if refused:  # the seed's "never on the CPU" rule: no server that would answer every request with an error
        rt.close()
        print(f"error: {refused}", file=sys.stderr)
        return 2
    app = create_app(settings, warnings=warnings, runtime=rt)
    print(f"Serving the chat UI at http://{host}:{settings.server.port}", flush=True)
    # uvicorn shuts down in order on SIGTERM (the lifespan closes the model worker), then re-raises the
    # signal; this handler turns that into a clean exit 0 instead of death by SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # `kill -USR1 <pid>`: every thread's stack to the log, for a report of a server that hangs
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    uvicorn.run(app, host=host, port=settings.server.port, log_level="warning", timeout_graceful_shutdown=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
