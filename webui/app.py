"""create_app(settings) -> FastAPI: /api, /v1, /docs, and the Gradio UI mounted at /."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.config import Settings
from engine.errors import EngineError, NotFound, TooLarge
from engine.runtime import Runtime

from .api import MAX_BODY, build_router
from .i18n import I18N
from .openai_api import build_openai_router
from .ui import build_ui

log = logging.getLogger("webui")


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


class ApiKeyMiddleware:
    """Require 'Authorization: Bearer <key>' on /api and /v1 (not /api/health, not CORS preflights).

    A plain ASGI middleware: starlette's BaseHTTPMiddleware hides client disconnects from the app, so a
    client that gave up on a whole (non-streamed) reply would hold the model until the reply was done.
    """

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            path = scope["path"]
            if (path.startswith("/api/") or path.startswith("/v1/")) and path != "/api/health":
                given = Headers(scope=scope).get("authorization", "")
                token = given[7:] if given.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), self.key):
                    response = error_response(
                        Request(scope),
                        401,
                        "authentication_error",
                        "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                    )
                    response.headers["WWW-Authenticate"] = "Bearer"
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a request body over `limit` bytes on /api and /v1, before anything reads or parses it.

    Without it a 50 MB JSON chat body is parsed and tokenized in full before it is refused. A multipart
    upload may be a little over, for its framing: the upload routes check the file's own size.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.multipart_limit = limit + 64 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        # no route has control characters in its path: refuse them, never redirect
        if any(c < " " or c == "\x7f" for c in path):
            response = error_response(Request(scope), 400, "invalid_request_error", "Invalid path.")
            await response(scope, receive, send)
            return
        if not (path.startswith("/api/") or path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").startswith("multipart/")
        limit = self.multipart_limit if multipart else self.limit
        size = headers.get("content-length", "")
        if size.isdigit() and int(size) > limit:
            mb = MAX_BODY // (1024 * 1024)
            response = error_response(Request(scope), 413, "too_large", f"The body is over {mb} MB.")
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:  # a body without Content-Length (chunked) is cut off too
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise TooLarge(f"The body is over {MAX_BODY // (1024 * 1024)} MB.")
            return message

        await self.app(scope, counted, send)


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
        return error_response(request, 500, "internal_error", "Internal error; see data/logs/engine.log.")

    app.include_router(build_router(rt))
    app.include_router(build_openai_router(rt))
    add_not_found_routes(app)
    if settings.server.api_key:
        app.add_middleware(ApiKeyMiddleware, key=settings.server.api_key)
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY)
    # Same-origin only unless origins are configured. With this middleware, Gradio adds no CORS of its own.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.server.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )

    auth = None
    if settings.server.auth:
        user, _, password = settings.server.auth.partition(":")
        auth = (user, password)
    blocks = build_ui(rt)
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="",
        auth=auth,
        i18n=I18N,
        allowed_paths=[str(rt.presets.user_dir)],
        footer_links=["api", "settings"],
        run_history=False,
        max_file_size="10mb",
        show_error=True,
        theme=gr.themes.Soft(),
        css=CSS,
    )
    quiet_queue(blocks)
    return app


def quiet_queue(blocks: gr.Blocks) -> None:
    """Gradio's queue polls for new events every 1 ms and for progress every 10 ms, even when idle: about
    5% of a core, taken from the model's threads on a small machine (and from a laptop's battery). Every
    5 ms and 100 ms cost a fraction of that, and at most 5 ms before an event starts."""
    queue = getattr(blocks, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_S)
        queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, 0.1)


QUEUE_POLL_S = 0.005

CSS = """
.status-line { font-size: 0.85em; opacity: 0.8; }
footer { opacity: 0.7; }
"""
