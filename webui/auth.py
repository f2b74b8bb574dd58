"""Credentials: either one protects everything.

- `--api-key KEY`: /api, /v1 and the docs take `Authorization: Bearer KEY`; the UI (and so Gradio's API)
  asks for a login whose password is the key.
- `--auth user:pass`: the UI asks for that login; /api, /v1 and the docs take the UI's login cookie or
  HTTP basic auth with the same user and password.
- Failed tries (a wrong key, password or login) are limited per client address: a few are free, then each
  one doubles the wait before the next try is even checked (429 with Retry-After).
- Without credentials, GET /api/health says only whether the server is up.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROTECTED = ("/api/", "/v1/", "/docs", "/redoc", "/openapi.json")
HEALTH = "/api/health"
LOGIN = ("/login", "/login/")


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


class Credentials:
    """What the server was started with, and the checks of what a request brings."""

    def __init__(self, api_key: str | None, auth: str | None) -> None:
        self.key = api_key or None
        user, _, password = (auth or "").partition(":")
        self.user: str | None = user if auth else None
        self.password: str | None = password if auth else None
        # the UI's login sessions: Gradio's token table and its cookie names (set once Gradio is mounted)
        self.ui_tokens: Mapping[str, str] = {}
        self.cookie_names: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return bool(self.key or self.user)

    def login_ok(self, user: str, password: str) -> bool:
        """The UI's login (Gradio calls this): --auth's user and password, else any name and the API key."""
        if self.user is not None and self.password is not None:
            return same(user, self.user) and same(password, self.password)
        return self.key is not None and same(password, self.key)

    def verdict(self, headers: Headers) -> str:
        """'ok', 'wrong' (credentials given, and wrong) or 'none' (nothing given)."""
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value:
            return "ok" if self.key is not None and same(value.strip(), self.key) else "wrong"
        if scheme == "basic" and value:
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "wrong"
            return "ok" if self.login_ok(user, password) else "wrong"
        if given:
            return "wrong"
        cookies = cookie_parser(headers.get("cookie", ""))
        tokens = [cookies[name] for name in self.cookie_names if name in cookies]
        if tokens:
            return "ok" if any(t in self.ui_tokens for t in tokens) else "none"  # an expired login
        return "none"

    def challenge(self) -> str:
        return "Bearer" if self.key else 'Basic realm="llmchat", charset="UTF-8"'

    def how(self) -> str:
        ways = []
        if self.key:
            ways.append("'Authorization: Bearer <key>'")
        if self.user:
            ways.append("HTTP basic auth with the --auth user, or the UI's login")
        return "Missing or wrong credentials: send " + " or ".join(ways) + "."


class LoginLimiter:
    """Per client address: `free` failed tries, then a wait that doubles with each failure up to `cap`."""

    def __init__(
        self,
        free: int = 5,
        base_s: float = 1.0,
        cap_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base_s, self.cap_s, self.clock = free, base_s, cap_s, clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}  # client -> (failures, blocked until)

    def wait_s(self, client: str) -> float:
        with self._lock:
            _, until = self._state.get(client, (0, 0.0))
            return max(0.0, until - self.clock())

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            if len(self._state) > 10_000:  # forget clients whose wait is long over
                self._state = {c: s for c, s in self._state.items() if s[1] + self.cap_s > now}
            failures = self._state.get(client, (0, 0.0))[0] + 1
            wait = (
                0.0
                if failures <= self.free
                else min(self.cap_s, self.base_s * 2 ** (failures - self.free - 1))
            )
            self._state[client] = (failures, now + wait)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._state.pop(client, None)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class AuthMiddleware:
    """Credentials on /api, /v1 and the docs; the limit on failed tries there and on the UI's login.

    A plain ASGI middleware: starlette's BaseHTTPMiddleware hides client disconnects from the app.
    """

    def __init__(self, app: ASGIApp, *, credentials: Credentials, limiter: LoginLimiter) -> None:
        self.app = app
        self.creds = credentials
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not self.creds.required:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        client = client_of(scope)
        if path in LOGIN and scope["method"] == "POST":
            await self.login(scope, receive, send, client)
            return
        if not path.startswith(PROTECTED) and path not in PROTECTED:
            await self.app(scope, receive, send)
            return
        verdict = self.creds.verdict(Headers(scope=scope))
        wait = self.limiter.wait_s(client) if verdict != "none" else 0.0
        if wait > 0:
            await self.too_many(wait)(scope, receive, send)
            return
        if verdict == "ok":
            self.limiter.succeeded(client)
            await self.app(scope, receive, send)
            return
        if verdict == "wrong":
            self.limiter.failed(client)
        if path == HEALTH:  # up or not, and nothing more
            scope.setdefault("state", {})["authenticated"] = False
            await self.app(scope, receive, send)
            return
        kind = "openai" if path.startswith("/v1/") else "api"
        body: dict[str, Any] = {"type": "authentication_error", "message": self.creds.how()}
        if kind == "openai":
            body.update(param=None, code=None)
        response = JSONResponse(
            {"error": body}, status_code=401, headers={"WWW-Authenticate": self.creds.challenge()}
        )
        await response(scope, receive, send)

    async def login(self, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        wait = self.limiter.wait_s(client)
        if wait > 0:
            await self.too_many(wait)(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    self.limiter.succeeded(client)
                elif 400 <= message["status"] < 500:
                    self.limiter.failed(client)
            await send(message)

        await self.app(scope, receive, watch)

    @staticmethod
    def too_many(wait: float) -> JSONResponse:
        seconds = max(1, int(wait + 0.999))
        return _error(
            429,
            "rate_limited",
            f"Too many failed logins from this address; try again in {seconds} s.",
            {"Retry-After": str(seconds)},
        )


def attach_ui_logins(credentials: Credentials, gradio_app: Any) -> None:
    """Let /api and /v1 accept the UI's login cookie: Gradio's token table and cookie names."""
    cookie_id = getattr(gradio_app, "cookie_id", None)
    tokens = getattr(gradio_app, "tokens", None)
    if cookie_id is None or tokens is None:
        return
    credentials.ui_tokens = tokens
    credentials.cookie_names = (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}")
