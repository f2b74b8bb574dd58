"""What a request must look like before any route sees it (ARCHITECTURE.md, rule 5), and the headers every
response carries.

- The Host header names a trusted host, so a DNS-rebinding page (evil.example resolving to 127.0.0.1) is
  refused: localhost, 127.0.0.1, [::1], the configured host, server.allowed_hosts; and any IP address
  when the server is bound to all interfaces (a rebinding page always arrives under a name).
- A state-changing request from a browser must come from our own origin (or a configured CORS origin):
  an `Origin` that is not ours, `Origin: null` or `Sec-Fetch-Site: cross-site` is refused. A request with
  neither header comes from curl, an SDK or the terminal client, and is allowed (the API key still applies).
- A body sent to /api or /v1 must be JSON (`application/json`), so a cross-site "simple" request (text/plain,
  a form) can never be parsed as one; the upload routes take multipart only, and the session import also
  takes JSONL (`application/jsonl`, `application/x-ndjson`, `application/x-jsonlines`: not simple types).
- Gradio's file route serves only files Gradio itself put in its cache (avatars shown, downloads made),
  never a backup, a hidden file, a URL it would fetch, or a file from the data or presets folders.
- Every response gets a Content-Security-Policy (same-origin images, forms and connections, no framing),
  X-Content-Type-Options, X-Frame-Options and Referrer-Policy.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
JSON_PREFIXES = ("/api/", "/v1/")
UPLOAD_ROUTES = ("/api/presets/import", "/api/lorebooks/import", "/api/personas/{name}/avatar")
UPLOAD_PATHS = re.compile(
    "^(" + "|".join(re.escape(r).replace(re.escape("{name}"), "[^/]+") for r in UPLOAD_ROUTES) + ")/?$"
)
# SillyTavern chats are JSONL: the import route also takes JSON Lines' own types (none is a CORS-simple type,
# so a cross-site page still cannot send one without a preflight, which it does not get)
JSONL_ROUTES = ("/api/sessions/import",)
JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines")
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/", "/file=", "/file/")
BLOCKED_ROUTES = ("/gradio_api/proxy=", "/proxy=")  # Gradio fetching other servers for the page


def refuse(status: int, kind: str, message: str) -> JSONResponse:
    if status == 404:
        kind = "not_found"
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def host_name(value: str) -> str:
    """'Example.com:7860' -> 'example.com', '[::1]:7860' -> '::1'; '' when it cannot be read."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    name, _, port = value.partition(":")
    if port and not port.isdecimal():
        return ""
    return name.rstrip(".")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class TrustedHosts:
    def __init__(self, bind_host: str, allowed: Iterable[str]) -> None:
        self.names = {*LOOPBACK_NAMES, *(host_name(h) or h.lower() for h in allowed)}
        bind = host_name(bind_host) if bind_host not in WILDCARD_BINDS else ""
        if bind:
            self.names.add(bind)
        self.any_ip = bind_host in WILDCARD_BINDS
        self.suffixes = tuple(n[1:] for n in self.names if n.startswith("*."))

    def __contains__(self, host: str) -> bool:
        name = host_name(host)
        if not name:
            return False
        return (
            name in self.names
            or (self.any_ip and is_ip(name))
            or any(name.endswith(s) for s in self.suffixes)
        )


def origin_of(url: str) -> str:
    """'HTTP://Host:80/x' -> 'http://host:80'."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class RequestGuard:
    """Host, origin, content type and file-route checks, before anything reads the request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: TrustedHosts,
        cors_origins: Iterable[str] = (),
        file_roots: Iterable[Path] = (),
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.cors = {origin_of(o) for o in cors_origins}
        self.file_roots = [Path(os.path.realpath(p)) for p in file_roots]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self.check(scope)
        if problem is not None:
            response = refuse(*problem)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> tuple[int, str, str] | None:
        path: str = scope.get("path", "")
        if any(c < " " or c == "\x7f" for c in path):  # no route has one: refuse, never redirect
            return 400, "invalid_request_error", "Invalid path."
        headers = Headers(scope=scope)
        if headers.get("host", "") not in self.hosts:
            return (
                400,
                "forbidden_host",
                (
                    "This host name is not allowed. Open the app as http://127.0.0.1:PORT or add the name to "
                    "server.allowed_hosts."
                ),
            )
        method = scope.get("method", "GET")
        if scope["type"] == "websocket" or method not in SAFE_METHODS:
            why = self.cross_site(headers)
            if why:
                return 403, "forbidden_origin", why
        if method not in SAFE_METHODS and path.startswith(JSON_PREFIXES):
            why = self.wrong_body(path, headers)
            if why:
                return 415, "invalid_request_error", why
        if path.startswith(BLOCKED_ROUTES):
            return 404, "not_found", "Not found."
        if path.startswith(FILE_ROUTES) and not self.file_allowed(path):
            return 404, "not_found", "File not found."
        return None

    def cross_site(self, headers: Headers) -> str | None:
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site", "").lower()
        if origin is None:
            if site == "cross-site":
                return "Cross-site requests are not allowed."
            return None  # not a browser (curl, SDKs, the terminal client), or a same-origin navigation
        allowed = origin_of(origin)
        if allowed in self.cors:
            return None
        host = headers.get("host", "")
        if origin.strip().lower() == "null" or urlsplit(allowed).netloc != host.strip().lower():
            return f"Requests from {origin[:100]} are not allowed (not this app's origin)."
        if site == "cross-site":
            return "Cross-site requests are not allowed."
        return None

    @staticmethod
    def wrong_body(path: str, headers: Headers) -> str | None:
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if UPLOAD_PATHS.match(path):
            if kind != "multipart/form-data":
                return "Upload the file as multipart/form-data (a 'file' field)."
            return None
        if not has_body and not kind:
            return None
        if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
            return None
        if kind in JSONL_TYPES and path.rstrip("/") in JSONL_ROUTES:
            return None
        if path.rstrip("/") in JSONL_ROUTES:
            return "Send the body as JSON (Content-Type: application/json) or JSONL (application/jsonl)."
        return "Send the body as JSON (Content-Type: application/json)."

    def file_allowed(self, path: str) -> bool:
        """Only files in Gradio's own cache, never a backup, a hidden file or a URL."""
        for prefix in FILE_ROUTES:
            if path.startswith(prefix):
                target = path[len(prefix) :]
                break
        else:
            return False
        if "://" in target or target.startswith(("http:", "https:", "//")):
            return False
        name = target.rstrip("/").rsplit("/", 1)[-1]
        if not name or name.startswith(".") or name.lower().endswith((".bak", ".tmp", "~")):
            return False
        try:
            real = Path(os.path.realpath(target))
        except (OSError, ValueError):
            return False
        return any(real.is_relative_to(root) for root in self.file_roots)


def gradio_file_roots() -> list[Path]:
    """Where Gradio keeps the files it serves: uploads, and copies of what the UI returned."""
    from gradio.utils import get_upload_folder

    return [Path(get_upload_folder())]


def content_security_policy(*, remote_images: bool = False) -> str:
    images = "'self' data: blob:" + (" https:" if remote_images else "")
    return "; ".join(
        [
            "default-src 'self'",
            # Gradio's page needs inline scripts and styles, and compiles its templates
            "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
            "style-src 'self' 'unsafe-inline'",
            f"img-src {images}",
            "media-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "frame-src 'none'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


# FastAPI's /docs and /redoc load Swagger UI and ReDoc from this CDN
DOCS_CDN = "https://cdn.jsdelivr.net"
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """Adds the security headers to every response, Gradio's and our errors included."""

    def __init__(self, app: ASGIApp, *, remote_images: bool = False) -> None:
        self.app = app
        csp = content_security_policy(remote_images=remote_images)
        self.headers = self._headers(csp)
        docs_csp = (
            csp.replace("script-src 'self'", f"script-src 'self' {DOCS_CDN}")
            .replace("style-src 'self'", f"style-src 'self' {DOCS_CDN}")
            .replace("img-src 'self'", "img-src 'self' https://fastapi.tiangolo.com")
        )
        self.docs_headers = self._headers(docs_csp)

    @staticmethod
    def _headers(csp: str) -> dict[str, str]:
        return {
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope.get("path", "") in DOCS_PATHS else self.headers

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)
