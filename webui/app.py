"""create_app(settings) -> FastAPI: /api, /v1, /docs, and the Gradio UI mounted at /."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.routing import Mount

from engine import EngineError, NotFound, Runtime, Settings

from .api import build_router
from .auth import AuthMiddleware, Credentials, LoginLimiter, attach_ui_logins
from .guard import RequestGuard, SecurityHeaders, TrustedHosts, gradio_file_roots
from .i18n import I18N
from .limits import MAX_BODY, BodyLimitMiddleware, RequestLimiter
from .openai_api import build_openai_router
from .queue_wake import wake_on_work
from .quiet import quiet_gradio
from .ui import build_ui

log = logging.getLogger("webui")
INTERNAL_ERROR = "Internal error; logs/engine.log in the data folder has the details."


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1")


def error_response(
    request: Request, status: int, kind: str, message: str, field: str | None = None
) -> JSONResponse:
    err: dict[str, Any] = {"type": kind, "message": message}
    if _is_openai(request):
        err.update(param=field, code=None)
    elif field:
        err["field"] = field
    return JSONResponse({"error": err}, status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or "body"
    kind = err.get("type", "")
    if kind == "json_invalid":
        return "The body is not valid JSON.", "body"
    if kind == "extra_forbidden":
        return f"Unknown field '{field}'.", field
    if kind == "missing":
        return f"Missing required field '{field}'.", field
    return f"Invalid value for '{field}': {err.get('msg')}.", field


# Where to look instead, per API prefix, in the 404 for a path no route has.
ROUTE_HINTS = {
    "api": "The routes are listed at /docs.",
    "v1": "There are /v1/models and /v1/chat/completions.",
}


def add_not_found_routes(app: FastAPI) -> None:
    """One JSON 404 for unknown /api and /v1 paths, which would otherwise fall through to the Gradio mount
    and get its error shape. Registered after the real routes, so it only catches what they do not."""
    for prefix, hint in ROUTE_HINTS.items():
        app.add_api_route(
            f"/{prefix}/{{path:path}}",
            _no_route(prefix, hint),
            methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
            include_in_schema=False,
        )


def _no_route(prefix: str, hint: str) -> Any:
    def no_route(path: str, request: Request) -> None:
        raise NotFound(f"No route {request.method} /{prefix}/{path}. {hint}")

    return no_route


def create_app(
    settings: Settings, *, warnings: list[str] | None = None, runtime: Runtime | None = None
) -> FastAPI:
    rt = runtime or Runtime(settings, warnings=warnings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        rt.tools.start()  # MCP tool servers start with the app, in the background; rt.close() stops them
        yield
        rt.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Local LLM Chat",
        description="Chat with local GGUF models: REST API with SSE streaming, and an OpenAI-compatible API.",
        version="0.1.0",
        docs_url="/docs",
        redoc_url="/redoc",
    )
    app.state.runtime = rt

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return error_response(request, exc.status, exc.kind, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return error_response(request, 400, "invalid_request_error", message, field)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal_error", INTERNAL_ERROR)

    app.include_router(build_router(rt))
    app.include_router(build_openai_router(rt))
    add_not_found_routes(app)
    server = settings.server
    credentials = Credentials(server.api_key, server.auth)
    # Starlette runs the last added first: headers on every response, then the host and origin checks,
    # CORS, credentials, the body limit, and the limit on open generation requests.
    app.add_middleware(RequestLimiter, total=server.max_queue, per_client=server.max_queue_per_client)
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY)
    app.add_middleware(AuthMiddleware, credentials=credentials, limiter=LoginLimiter())
    # Same-origin only unless origins are configured. With this middleware, Gradio adds no CORS of its own.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=server.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )
    app.add_middleware(
        RequestGuard,
        hosts=TrustedHosts(server.host, server.allowed_hosts),
        cors_origins=server.cors_origins,
        file_roots=gradio_file_roots(),
    )
    app.add_middleware(SecurityHeaders, remote_images=server.remote_images)

    blocks = build_ui(rt)
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="",
        auth=credentials.login_ok if credentials.required else None,
        auth_message=LOGIN_MESSAGE[bool(credentials.user)],
        i18n=I18N,
        allowed_paths=[str(rt.presets.user_dir)],
        footer_links=["api", "settings"],
        run_history=False,
        max_file_size="10mb",
        show_error=True,
        theme=gr.themes.Soft(),
        css=CSS,
    )
    for route in app.routes:  # /api and /v1 accept the UI's login cookie
        if isinstance(route, Mount) and hasattr(route.app, "tokens"):
            attach_ui_logins(credentials, route.app)
    quiet_queue(blocks, max_size=server.max_queue)
    no_matplotlib_search()
    quiet_gradio()  # no client input printed whole to the log
    return app


def quiet_queue(blocks: gr.Blocks, max_size: int | None = None) -> None:
    """Gradio's queue polls for new events every 1 ms and for progress every 10 ms, even when idle: about
    5% of a core, taken from the model's threads on a small machine (and from a laptop's battery). It
    sleeps until an event arrives instead (webui/queue_wake.py), and checks progress every 100 ms.

    `max_size` bounds the events waiting in it: more get Gradio's "queue is full" error."""
    queue = getattr(blocks, "_queue", None)
    if queue is None:
        return
    if not wake_on_work(queue) and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = max(queue.sleep_when_free, 0.005)  # another Gradio: poll less often
    if hasattr(queue, "progress_update_sleep_when_free"):
        queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, 0.1)
    if max_size is not None:
        queue.max_size = max_size


def no_matplotlib_search() -> None:
    """Gradio imports matplotlib around every event and every streamed update (its
    MatplotlibBackendMananger); where it is not installed, each of those imports searches sys.path again.
    None in sys.modules is Python's own mark for a module known to be missing: the import fails at once."""
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


LOGIN_MESSAGE = {
    False: "Log in with any user name and the server's API key as the password.",
    True: "Log in with the user name and password the server was started with (--auth).",
}

CSS = """
.status-line { font-size: 0.85em; opacity: 0.8; }
footer { opacity: 0.7; }
#chatbot img[alt="avatar"] { display: inline-block; width: 1.75em; height: 1.75em; margin: 0 0.3em 0 0;
  border-radius: 50%; vertical-align: middle; }
"""
