"""Limits that keep one client from taking the server: the body size on every route, and how many
generation requests may be open at once, per client address and overall (429 that says which)."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import client_of

MAX_BODY = 10 * 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # a multipart upload's framing; the upload routes check the file itself

# routes that wait for the model
GENERATION = re.compile(
    r"^/(api/chat(/stream|/impersonate)?|api/sessions/[^/]+/(regenerate|edit)|v1/chat/completions)/?$"
)


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """413 for a request body over `limit` bytes, on every route (Gradio's queue and uploads included),
    before anything reads or parses it. A body without Content-Length (chunked) is cut off as it comes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    def message(self) -> str:
        return f"The body is over {self.limit // (1024 * 1024)} MB."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").startswith("multipart/")
        limit = self.limit + (MULTIPART_SLACK if multipart else 0)
        size = headers.get("content-length", "")
        if size.isdecimal() and int(size) > limit:
            await _error(413, "too_large", self.message())(scope, receive, send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # answer now; the app sees the client leave and its own reply is dropped
                refused = True
                if not started:
                    await _error(413, "too_large", self.message())(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except ClientDisconnect:
            if not refused:
                raise


class RequestLimiter:
    """At most `per_client` open generation requests per client address and `total` overall."""

    def __init__(self, app: ASGIApp, *, total: int, per_client: int) -> None:
        self.app = app
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not GENERATION.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = client_of(scope)
        refused = self._enter(client)
        if refused:
            await _error(429, "rate_limited", refused, {"Retry-After": "1"})(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self._open[client] -= 1
                if self._open[client] <= 0:
                    del self._open[client]

    def _enter(self, client: str) -> str | None:
        with self._lock:
            if self._open[client] >= self.per_client:
                n = self._open[client]
                return (
                    f"Too many requests from this address are waiting for the model ({n} open, at most "
                    f"{self.per_client}); wait for one to finish."
                )
            if sum(self._open.values()) >= self.total:
                return (
                    f"The server is busy: {self.total} requests are already waiting for the model; "
                    "try again shortly."
                )
            self._open[client] += 1
            return None

    def open_requests(self) -> dict[str, Any]:
        with self._lock:
            return {"total": sum(self._open.values()), "clients": len(self._open)}
