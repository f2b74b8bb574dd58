"""Security against the real server: CORS, Host and Origin checks (DNS rebinding, CSRF), JSON-only bodies,
security headers, credentials (API key, --auth, the login rate limit), the bind address, limits, Gradio's file
routes, model paths, path traversal, and sessions that lose no update."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import (
    LONG_STORY,
    ROOT,
    TEST_ENV,
    ServerProcess,
    assert_no_traceback,
    free_port,
    give_up_on_whole_reply,
    queue_ms_of_next_request,
    server_fixture,
)

pytestmark = pytest.mark.slow

KEY = "test-key-3f9a"
GOOD = "http://good.example"
EVIL = "http://evil.example"
PASSWD_MARK = "root:x:0:0"
CONFIG_MARK = "cors_origins"  # a line of config/model_config.yaml


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    """Started with no security flags: the defaults."""
    yield from server_fixture(tmp_path_factory, "sec-default", model_path)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    """Started with --cors-origin and --api-key."""
    yield from server_fixture(
        tmp_path_factory, "sec-locked", model_path, args=["--cors-origin", GOOD, "--api-key", KEY]
    )


def preflight(url: str, origin: str, path: str = "/api/chat") -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    }
    return httpx.options(url + path, headers=headers)


def raw_get(server: ServerProcess, path: str, method: str = "GET") -> tuple[int, str]:
    """Send `path` exactly as written: no client-side normalisation of ../ or %2F."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


# --- CORS -------------------------------------------------------------------------------------------------


def test_cors_refused_by_default(server: ServerProcess) -> None:
    for origin in (EVIL, GOOD):
        resp = preflight(server.url, origin)
        assert "access-control-allow-origin" not in resp.headers, resp.headers
        assert resp.status_code >= 400
        simple = httpx.get(server.url + "/api/presets", headers={"Origin": origin})
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers


def test_cors_allowed_for_the_configured_origin_only(locked: ServerProcess) -> None:
    resp = preflight(locked.url, GOOD)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == GOOD
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()
    for path in ("/api/chat", "/v1/chat/completions"):
        assert preflight(locked.url, GOOD, path).status_code == 200  # the API key does not block preflights
    evil = preflight(locked.url, EVIL)
    assert "access-control-allow-origin" not in evil.headers
    actual = httpx.get(
        locked.url + "/api/presets", headers={"Origin": GOOD, "Authorization": f"Bearer {KEY}"}
    )
    assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == GOOD


# --- API key ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/presets", "/api/sessions", "/api/gpu", "/v1/models", "/api/nope"])
def test_api_key_required(locked: ServerProcess, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"X-Api-Key": KEY}):
        resp = httpx.get(locked.url + path, headers=headers)
        assert resp.status_code == 401, (path, headers, resp.text)
        assert resp.json()["error"]["type"] == "authentication_error"
        assert resp.headers["www-authenticate"] == "Bearer"
        assert KEY not in resp.text
    ok = httpx.get(locked.url + path, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == (404 if path == "/api/nope" else 200)


def test_api_key_blocks_generation_before_it_starts(locked: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "params": {"max_tokens": 2}}
    for path in ("/api/chat", "/api/chat/stream"):
        assert httpx.post(locked.url + path, json=body).status_code == 401
    resp = httpx.post(
        locked.url + "/api/chat", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
    )
    assert resp.status_code == 200


def test_api_key_does_not_hide_disconnects(locked: ServerProcess) -> None:
    """Clients that hang up still free the model when the key middleware sits in front of the routes."""
    auth = {"Authorization": f"Bearer {KEY}"}
    payload = {"messages": LONG_STORY, "params": {"max_tokens": 400, "temperature": 0}}
    give_up_on_whole_reply(locked.url, "/api/chat", payload, auth)
    assert queue_ms_of_next_request(locked.url, auth) < 1000
    with (
        httpx.Client(base_url=locked.url, headers=auth, timeout=60) as c,
        c.stream("POST", "/api/chat/stream", json=payload) as resp,
    ):
        assert resp.status_code == 200
        for n, _ in enumerate(line for line in resp.iter_lines() if line.startswith("data: ")):
            if n == 2:
                break
    assert queue_ms_of_next_request(locked.url, auth) < 1000


def test_api_key_with_openai_sdk(locked: ServerProcess) -> None:
    with (
        openai.OpenAI(base_url=f"{locked.url}/v1", api_key="wrong", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.list()
    with openai.OpenAI(base_url=f"{locked.url}/v1", api_key=KEY, max_retries=0) as good:
        assert good.models.list().data


def test_health_and_ui_stay_open(locked: ServerProcess) -> None:
    assert httpx.get(locked.url + "/api/health").status_code == 200
    assert httpx.get(locked.url + "/").status_code == 200


# --- bind address -----------------------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a LISTEN socket on `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hexport = local.split(":")
        if state == "0A" and int(hexport, 16) == port:
            found.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_default_bind_is_loopback(server: ServerProcess) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp")
    assert listening_addresses(server.port) == {"127.0.0.1"}
    assert f"http://127.0.0.1:{server.port}" in server.log_text()
    assert "WARNING: binding" not in server.log_text()


def wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content or proc.poll() is not None:
            return content
        time.sleep(0.1)
    return path.read_text(errors="replace")


def lan_start(tmp_path: Path, model_path: Path, *flags: str) -> tuple[int | None, str]:
    """Start on 0.0.0.0 with `flags`; (exit code or None if it served, its stderr). Never left running."""
    port = free_port()
    err = tmp_path / f"stderr-{len(flags)}-{port}.txt"
    cmd = [sys.executable, "-m", "webui", "--host", "0.0.0.0", "--port", str(port), *flags]
    cmd += ["--data-dir", str(tmp_path / "data"), "--model", str(model_path)]
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **TEST_ENV}, stdout=subprocess.PIPE, stderr=err_file
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # "Serving the chat UI at ..." or nothing: it exited
        code = None if "Serving" in line else proc.wait(60)
    finally:
        proc.kill()  # never leave a server bound to every interface
        proc.wait(15)
    return code, err.read_text(errors="replace")


def test_lan_bind_needs_both_credentials(tmp_path: Path, model_path: Path) -> None:
    """Before: a warning when neither was set, and silence with only one, which left /api (with --auth) or
    the UI's API (with --api-key) open to the network."""
    for flags, missing in (
        ((), "--auth and --api-key"),
        (("--auth", "me:pw"), "--api-key"),
        (("--api-key", KEY), "--auth"),
    ):
        code, err = lan_start(tmp_path, model_path, *flags)
        assert code == 2, (flags, err)
        assert f"error: binding to 0.0.0.0 exposes the chat to your network without {missing}." in err
        assert "--insecure-lan" in err and "Traceback" not in err
    code, err = lan_start(tmp_path, model_path, "--insecure-lan")
    assert code is None, err  # it served
    assert "WARNING: binding to 0.0.0.0" in err and "read or change your chats" in err
    code, err = lan_start(tmp_path, model_path, "--auth", "me:pw", "--api-key", KEY)
    assert code is None and "WARNING" not in err, err


# --- Gradio's file routes ---------------------------------------------------------------------------------


def file_route_attacks(data_dir: Path, session_file: Path) -> list[str]:
    config = ROOT / "config" / "model_config.yaml"
    presets = data_dir / "presets"
    rel = os.path.relpath(session_file, presets)
    return [
        "/gradio_api/file=/etc/passwd",
        "/file=/etc/passwd",
        "/file=../../etc/passwd",
        "/gradio_api/file=../../etc/passwd",
        "/gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/gradio_api/file=%252Fetc%252Fpasswd",
        "/gradio_api/file=/proc/self/environ",
        f"/gradio_api/file={config}",
        f"/gradio_api/file={presets}/../../../../etc/passwd",
        f"/gradio_api/file={presets}/{rel}",  # inside the allowed folder by prefix, outside once resolved
        f"/gradio_api/file={presets}%2F..%2Fsessions%2F{session_file.name}",
        f"/gradio_api/file={session_file}",
        "/gradio_api/file=" + str(ROOT / ".git" / "config"),
        "/static/../../../../etc/passwd",
        "/assets/../../../../etc/passwd",
        "/gradio_api/file%3D/etc/passwd",
    ]


def test_gradio_file_routes_serve_nothing_outside_allowed_folders(server: ServerProcess) -> None:
    imported = httpx.post(
        server.url + "/api/sessions/import", json=[{"role": "user", "content": "secret-session-text"}]
    )
    assert imported.status_code == 200
    session_file = server.data_dir / "sessions" / f"{imported.json()['id']}.json"
    assert session_file.is_file()
    for path in file_route_attacks(server.data_dir, session_file):
        status, text = raw_get(server, path)
        assert 400 <= status < 500, (path, status, text[:300])
        assert PASSWD_MARK not in text and CONFIG_MARK not in text, path
        assert "secret-session-text" not in text, path
        assert "[core]" not in text, path
        assert_no_traceback(text)


# --- path traversal on ids and names ----------------------------------------------------------------------

TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "..%2Fconfig",
    "..%2F..%2Fconfig%2Fmodel_config",
    "..%2F..%2Fconfig%2Fmodel_config.yaml",
    "%2Fetc%2Fpasswd",
    "..",
    "%2e%2e",
    "..%5C..%5Cetc%5Cpasswd",
    "s-20250101-120000-abcdef%00.json",
    "friendly%00",
    "..%252F..%252Fetc%252Fpasswd",
    "....%2F%2F....%2F%2Fetc%2Fpasswd",
]


def traversal_requests() -> list[tuple[str, str]]:
    out = []
    for t in TRAVERSALS:
        out += [
            ("GET", f"/api/sessions/{t}"),
            ("DELETE", f"/api/sessions/{t}"),
            ("GET", f"/api/sessions/{t}/markdown"),
            ("GET", f"/api/sessions/{t}/prompt"),
            ("GET", f"/api/presets/{t}"),
            ("DELETE", f"/api/presets/{t}"),
            ("GET", f"/api/presets/{t}/card.json"),
            ("GET", f"/api/presets/{t}/card.png"),
        ]
    return out


def tree_state() -> dict[str, float]:
    watched = [ROOT / "config", ROOT / "presets", ROOT / "models"]
    return {str(p): p.stat().st_mtime for d in watched for p in [d, *d.iterdir()]}


def test_path_traversal_on_ids_and_names(server: ServerProcess) -> None:
    before = tree_state()
    for method, path in traversal_requests():
        status, text = raw_get(server, path, method)
        assert 400 <= status < 500, (method, path, status, text[:300])
        assert PASSWD_MARK not in text and CONFIG_MARK not in text, path
        assert_no_traceback(text)
        if path.startswith("/api/"):
            assert '"error"' in text, (path, text[:200])
    assert tree_state() == before  # nothing outside the data dir was created, changed or deleted


def test_put_preset_cannot_escape(server: ServerProcess) -> None:
    before = tree_state()
    for name in ("..%2F..%2Fpwned", "..%2Fconfig%2Fmodel_config", "%2Ftmp%2Fpwned", ".."):
        resp = httpx.put(f"{server.url}/api/presets/{name}", json={"description": "x"})
        assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text)
        assert_no_traceback(resp.text)
    assert tree_state() == before
    assert not (ROOT / "pwned.yaml").exists() and not Path("/tmp/pwned.yaml").exists()


def test_session_import_ignores_the_given_id(server: ServerProcess) -> None:
    doc = {
        "schema_version": 1,
        "id": "../../../config/model_config",
        "title": "x",
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "messages": [{"role": "user", "content": "hi", "time": "2025-01-01T00:00:00Z"}],
    }
    before = tree_state()
    resp = httpx.post(server.url + "/api/sessions/import", json=doc)
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 200:
        sid = resp.json()["id"]
        assert sid.startswith("s-") and "/" not in sid
        assert (server.data_dir / "sessions" / f"{sid}.json").is_file()
    assert tree_state() == before


# --- Host and Origin: DNS rebinding and cross-site writes (ARCHITECTURE.md rule 5) -------------------------

EVIL_PAGE = "http://evil.example"


def state_of(server: ServerProcess) -> tuple[list[str], list[str]]:
    sessions = sorted(s["id"] for s in httpx.get(server.url + "/api/sessions").json())
    presets = sorted(p["name"] for p in httpx.get(server.url + "/api/presets").json())
    return sessions, presets


def test_dns_rebinding_hosts_are_refused(server: ServerProcess) -> None:
    """Before: `Host: rebind.example` got the session list, as a rebinding page would."""
    port = server.port
    for host in (f"rebind.example:{port}", "rebind.example", f"127.0.0.1.nip.io:{port}", "", "a:b:c"):
        for path in ("/api/sessions", "/", "/config", "/gradio_api/info", "/v1/models"):
            resp = httpx.get(server.url + path, headers={"Host": host})
            assert resp.status_code == 400, (host, path, resp.status_code)
            assert resp.json()["error"]["type"] == "forbidden_host"
            assert "s-" not in resp.text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert httpx.get(server.url + "/api/sessions", headers={"Host": host}).status_code == 200, host


def cross_site_attempts(server: ServerProcess) -> list[tuple[str, str, dict[str, Any]]]:
    """The requests a page on another origin can send without CORS (mode: "no-cors") or a form can."""
    doc = b'[{"role": "user", "content": "planted by a web page"}]'
    card = {"file": ("card.json", b'{"name": "Planted", "description": "x"}', "application/json")}
    evil = {"Origin": EVIL_PAGE}
    other_port = {"Origin": f"http://127.0.0.1:{server.port + 1}", "Sec-Fetch-Site": "same-site"}
    json_type = {"Content-Type": "application/json"}
    plain = {"Content-Type": "text/plain"}
    return [
        ("POST", "/api/sessions/import", {"content": doc, "headers": {**evil, **plain}}),
        ("POST", "/api/sessions/import", {"content": doc, "headers": {**other_port, **plain}}),
        ("POST", "/api/sessions/import", {"content": doc, "headers": {**evil, **json_type}}),
        ("POST", "/api/sessions/import", {"content": doc, "headers": {"Origin": "null", **json_type}}),
        ("POST", "/api/sessions/import", {"content": doc, "headers": {"Sec-Fetch-Site": "cross-site"}}),
        ("POST", "/api/presets/import", {"files": card, "headers": evil}),
        ("POST", "/api/presets/import", {"files": card, "headers": other_port}),
        ("PUT", "/api/presets/planted", {"json": {"description": "x"}, "headers": evil}),
        ("POST", "/v1/chat/completions", {"content": b"{}", "headers": {**evil, **plain}}),
        ("POST", "/gradio_api/queue/join", {"json": {"data": [], "fn_index": 0}, "headers": evil}),
        ("POST", "/gradio_api/upload", {"files": {"files": ("x.txt", b"x")}, "headers": evil}),
        ("POST", "/login", {"data": {"username": "a", "password": "b"}, "headers": evil}),
    ]


def test_cross_site_writes_are_refused_and_change_nothing(server: ServerProcess) -> None:
    """Before: a page on another origin planted a session (any Content-Type was parsed as JSON) and a
    character (multipart), confirmed in Chromium. tests/browser/test_security_ui.py does it from a page."""
    before = state_of(server)
    victim = before[0][0] if before[0] else "s-20250101-120000-abcdef"
    attempts = [
        *cross_site_attempts(server),
        ("DELETE", f"/api/sessions/{victim}", {"headers": {"Origin": EVIL_PAGE}}),
    ]
    for method, path, kw in attempts:
        resp = httpx.request(method, server.url + path, **kw)
        assert resp.status_code == 403, (method, path, kw.get("headers"), resp.status_code, resp.text[:200])
        assert resp.json()["error"]["type"] == "forbidden_origin"
    assert state_of(server) == before
    ours = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    ok = httpx.post(
        server.url + "/api/sessions/import", json=[{"role": "user", "content": "mine"}], headers=ours
    )
    assert ok.status_code == 200, ok.text  # the app's own page may write
    curl = httpx.post(server.url + "/api/sessions/import", json=[{"role": "user", "content": "curl"}])
    assert curl.status_code == 200  # no Origin, no Sec-Fetch-Site: not a browser


def test_json_routes_take_only_json(server: ServerProcess) -> None:
    """Before: a text/plain or form body (which needs no CORS preflight) was parsed as JSON."""
    before = state_of(server)
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    for method, path in (
        ("POST", "/api/sessions/import"),
        ("POST", "/api/chat"),
        ("POST", "/api/chat/stream"),
        ("PUT", "/api/presets/planted"),
        ("POST", "/v1/chat/completions"),
    ):
        for kind in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            None,
        ):
            headers = {"Content-Type": kind} if kind else {}
            resp = httpx.request(method, server.url + path, content=body, headers=headers)
            assert resp.status_code == 415, (path, kind, resp.status_code)
            assert "application/json" in resp.json()["error"]["message"]
    card = b'{"name": "Planted"}'
    resp = httpx.post(
        server.url + "/api/presets/import", content=card, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 415 and "multipart" in resp.json()["error"]["message"]
    assert state_of(server) == before


def test_a_configured_cors_origin_may_write(locked: ServerProcess) -> None:
    headers = {"Origin": GOOD, "Authorization": f"Bearer {KEY}"}
    resp = httpx.post(
        locked.url + "/api/sessions/import", json=[{"role": "user", "content": "x"}], headers=headers
    )
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == GOOD
    evil = httpx.post(
        locked.url + "/api/sessions/import",
        json=[{"role": "user", "content": "x"}],
        headers={"Origin": EVIL, "Authorization": f"Bearer {KEY}"},
    )
    assert evil.status_code == 403  # the key does not make another site's page trusted


# --- security headers --------------------------------------------------------------------------------------


def test_security_headers_on_every_response(server: ServerProcess) -> None:
    """Before: no CSP or X-Frame-Options, so any site could frame the UI."""
    checks = [
        ("GET", "/", {}),
        ("GET", "/config", {}),
        ("GET", "/theme.css", {}),
        ("GET", "/gradio_api/info", {}),
        ("GET", "/api/health", {}),
        ("GET", "/api/nope", {}),
        ("GET", "/v1/models", {}),
        ("GET", "/docs", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/gradio_api/file=/etc/passwd", {}),
        ("GET", "/api/sessions", {"headers": {"Host": "rebind.example"}}),
        ("POST", "/api/sessions/import", {"content": b"x" * (11 * 1024 * 1024)}),
    ]
    for method, path, kw in checks:
        resp = httpx.request(method, server.url + path, **kw)
        csp = resp.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, (path, resp.status_code, csp)
        directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in csp.split(";"))
        assert directives["img-src"].startswith("'self'") and "form-action" in directives, csp
        assert not {"*", "http:", "https:"} & set(directives["img-src"].split()), csp  # no remote images
        assert resp.headers.get("x-content-type-options") == "nosniff", path
        assert resp.headers.get("x-frame-options") == "DENY", path


# --- credentials -------------------------------------------------------------------------------------------

USER, PASSWORD = "me", "pw-9d2e"


@pytest.fixture(scope="module")
def auth_only(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    yield from server_fixture(tmp_path_factory, "sec-auth", model_path, args=["--auth", f"{USER}:{PASSWORD}"])


@contextlib.contextmanager
def ui_login(server: ServerProcess, password: str, user: str = USER) -> Iterator[httpx.Client]:
    """A client holding the UI's login cookie, as a browser after the login form."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        resp = c.post("/login", data={"username": user, "password": password})
        assert resp.status_code == 200, resp.text
        yield c


def test_auth_alone_guards_the_api_and_the_docs(auth_only: ServerProcess) -> None:
    """Before: with --auth only the UI asked for a password; /api and /v1 answered anyone."""
    for path in ("/api/sessions", "/api/presets", "/v1/models", "/docs", "/openapi.json"):
        resp = httpx.get(auth_only.url + path)
        assert resp.status_code == 401, (path, resp.status_code)
        assert resp.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(auth_only.url + path, auth=(USER, "wrong")).status_code == 401
        assert httpx.get(auth_only.url + path, auth=(USER, PASSWORD)).status_code == 200, path
    assert (
        httpx.post(
            auth_only.url + "/api/sessions/import", json=[{"role": "user", "content": "x"}]
        ).status_code
        == 401
    )
    with ui_login(auth_only, PASSWORD) as browser_like:  # the UI's login cookie works for the API too
        assert browser_like.get("/api/sessions").status_code == 200
        assert browser_like.get("/gradio_api/info").status_code == 200
    assert httpx.get(auth_only.url + "/gradio_api/info").status_code == 401


def test_api_key_alone_guards_the_gradio_api(locked: ServerProcess) -> None:
    """Before: with --api-key only, /gradio_api/... listed and changed every chat without a key."""
    for method, path in (
        ("GET", "/gradio_api/info"),
        ("GET", "/config"),
        ("POST", "/gradio_api/call/on_load"),
        ("POST", "/gradio_api/queue/join"),
        ("POST", "/gradio_api/upload"),
    ):
        resp = httpx.request(method, locked.url + path, json={"data": []} if method == "POST" else None)
        assert resp.status_code == 401, (path, resp.status_code, resp.text[:200])
    with ui_login(locked, KEY, user="anyone") as ui:  # the UI's login takes the key as the password
        assert ui.get("/gradio_api/info").status_code == 200
        assert ui.get("/api/sessions").status_code == 200
        assert ui.get("/docs").status_code == 200
    bad = httpx.post(locked.url + "/login", data={"username": "anyone", "password": "wrong"})
    assert bad.status_code == 400


def test_health_reveals_only_status_without_credentials(
    locked: ServerProcess, auth_only: ServerProcess
) -> None:
    """Before: /api/health showed the model, its path, the GPU and the queue to anyone."""
    for srv, creds in (
        (locked, {"headers": {"Authorization": f"Bearer {KEY}"}}),
        (auth_only, {"auth": (USER, PASSWORD)}),
    ):
        bare = httpx.get(srv.url + "/api/health")
        assert bare.status_code == 200 and bare.json() == {"status": "ok"}, bare.text
        full = httpx.get(srv.url + "/api/health", **creds).json()
        assert full["status"] == "ok" and "model" in full and "gpu" in full


def test_failed_logins_are_rate_limited(tmp_path: Path, model_path: Path) -> None:
    """Before: 670 password tries a second. Now a few are free, then each failure doubles the wait, and
    while it lasts no password is even checked, the right one included."""
    with ServerProcess(tmp_path / "data", model=model_path, args=["--auth", f"{USER}:{PASSWORD}"]) as srv:
        codes = [srv_login(srv, "wrong").status_code for _ in range(8)]
        assert codes[:5] == [400] * 5, codes
        assert 429 in codes, codes
        blocked = srv_login(srv, PASSWORD)
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        assert "try again" in blocked.json()["error"]["message"]
        api = None
        for _ in range(6):  # basic auth shares the limit; the wait doubles until a slow machine sees it
            if srv_login(srv, "wrong").status_code != 429:
                continue
            started = time.monotonic()
            api = httpx.get(srv.url + "/api/sessions", auth=(USER, PASSWORD))
            if api.status_code == 429 or time.monotonic() - started < 0.5:
                break
            time.sleep(float(blocked.headers["retry-after"]))
        assert api is not None and api.status_code == 429
        assert httpx.get(srv.url + "/api/health").json() == {"status": "ok"}  # no credentials: not limited


def srv_login(srv: ServerProcess, password: str) -> httpx.Response:
    return httpx.post(srv.url + "/login", data={"username": USER, "password": password})


# --- limits ------------------------------------------------------------------------------------------------


def test_too_many_messages_in_one_request(server: ServerProcess) -> None:
    """Before: 200,000 tiny messages (8 MB, under the body limit) kept the model busy for minutes."""
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(2001)]
    for path in ("/api/chat", "/api/chat/stream", "/v1/chat/completions"):
        resp = httpx.post(server.url + path, json={"messages": many, "params": {"max_tokens": 1}}, timeout=60)
        assert resp.status_code == 400, (path, resp.status_code)
        assert "server.max_messages" in resp.json()["error"]["message"]
    # 1,999 pass the count (and fail on a bad parameter instead, so that the model is not run)
    under = {"messages": many[:1999], "params": {"temperature": 99}}
    resp = httpx.post(server.url + "/api/chat", json=under, timeout=60)
    assert resp.status_code == 400 and "max_messages" not in resp.text and "temperature" in resp.text


def test_open_generation_requests_are_bounded_with_a_429(tmp_path: Path, model_path: Path) -> None:
    env = {"LLM_SERVER__MAX_QUEUE_PER_CLIENT": "1", "LLM_SERVER__MAX_QUEUE": "2"}
    with ServerProcess(tmp_path / "data", model=model_path, env=env) as srv, httpx.Client(timeout=120) as c:
        long = {"messages": LONG_STORY, "params": {"max_tokens": 200, "temperature": 0}}
        with c.stream("POST", srv.url + "/api/chat/stream", json=long) as first:
            rest = first_delta(first)  # kept: dropping the iterator would close the stream
            second = c.post(srv.url + "/v1/chat/completions", json=long)
            assert second.status_code == 429, second.text[:200]
            assert "at most 1" in second.json()["error"]["message"]
            assert second.headers["retry-after"] == "1"
            assert any('"done"' in line for line in rest)
        # the first one has gone: its slot is given back as its response ends on the server, which can be a
        # moment after the client read its last event
        short = {"messages": [{"role": "user", "content": "Hi"}], "params": {"max_tokens": 1}}
        deadline = time.monotonic() + 10
        while (status := c.post(srv.url + "/api/chat", json=short).status_code) == 429:
            assert time.monotonic() < deadline, "the finished request still counts against the limit"
            time.sleep(0.1)
        assert status == 200


def test_body_limit_covers_gradio_and_its_log(server: ServerProcess) -> None:
    """Before: /gradio_api/queue/join took 50 MB bodies, and printed them whole to the log."""
    big = json.dumps({"data": ["x" * (11 * 1024 * 1024)], "fn_index": 0, "session_hash": "h"}).encode()
    for headers in ({}, {"Transfer-Encoding": "chunked"}):
        content = big if not headers else iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
        resp = httpx.post(
            server.url + "/gradio_api/queue/join",
            content=content,
            headers={"Content-Type": "application/json", **headers},
            timeout=60,
        )
        assert resp.status_code == 413, (headers, resp.status_code)
        assert resp.json()["error"]["type"] == "too_large"
    marker = "inputmarker" * 100_000  # 1.1 MB, a bad event under the limit
    deps = httpx.get(server.url + "/config", timeout=30).json()["dependencies"]
    fn = next(d["id"] for d in deps if d.get("backend_fn") and len(d["inputs"]) > 1)  # one input too few
    before = len(server.log_text())
    bad = {"data": [marker], "fn_index": fn, "session_hash": "h2", "trigger_id": 1}
    assert httpx.post(server.url + "/gradio_api/queue/join", json=bad, timeout=60).status_code == 200
    deadline = time.monotonic() + 60
    while "enough input values" not in server.log_text()[before:] and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = server.log_text()[before:]
    assert "enough input values" in logged
    assert "inputmarker" * 20 not in logged and len(logged) < 20_000, len(logged)


# --- files -------------------------------------------------------------------------------------------------


def test_models_load_only_from_the_models_folder(
    server: ServerProcess, model_path: Path, tmp_path: Path
) -> None:
    """Before: any .gguf anywhere on disk loaded, by absolute path or ../."""
    outside = tmp_path / "outside.gguf"
    outside.symlink_to(model_path)
    for path in (
        str(outside),
        f"../../../../../../..{outside}",
        "../" * 12 + "tmp/x.gguf",
        f"models/../../{model_path.name}",
    ):
        resp = httpx.post(server.url + "/api/models/load", json={"path": path}, timeout=120)
        assert resp.status_code == 400, (path, resp.status_code, resp.text[:200])
        assert "models folder" in resp.json()["error"]["message"]
    assert httpx.get(server.url + "/api/models").json()["loaded"]["name"] == model_path.name
    resp = httpx.post(server.url + "/api/models/load", json={"path": model_path.name}, timeout=120)
    assert resp.status_code == 200, resp.text[:300]


def test_gradio_file_route_serves_only_its_cache(server: ServerProcess) -> None:
    """Before: /gradio_api/file= served the presets folder whole, .bak files included."""
    for description in ("first", "second"):
        assert (
            httpx.put(server.url + "/api/presets/filetest", json={"description": description}).status_code
            == 200
        )
    presets = server.data_dir / "presets"
    assert (presets / "filetest.yaml.bak").is_file()
    for target in (presets / "filetest.yaml.bak", presets / "filetest.yaml", presets / ".seeded.json"):
        status, text = raw_get(server, f"/gradio_api/file={target}")
        assert status == 404, (target, status)
        assert "first" not in text and "second" not in text
    status, _ = raw_get(server, "/gradio_api/file=https://example.com/beacon.png")
    assert status == 404  # Gradio would fetch it for the page: a tracking beacon through our server
    uploaded = httpx.post(server.url + "/gradio_api/upload", files={"files": ("avatar.png", b"\x89PNG fake")})
    assert uploaded.status_code == 200, uploaded.text
    cached = uploaded.json()[0]
    assert httpx.get(f"{server.url}/gradio_api/file={cached}").content == b"\x89PNG fake"  # what the UI needs
    bak = httpx.post(
        server.url + "/gradio_api/upload", files={"files": ("notes.yaml.bak", b"secret")}
    ).json()[0]
    assert httpx.get(f"{server.url}/gradio_api/file={bak}").status_code == 404


# --- sessions: no lost updates -----------------------------------------------------------------------------


def first_delta(resp: httpx.Response) -> Iterator[str]:
    """Wait for the stream's first text; returns the rest of its lines."""
    assert resp.status_code == 200
    lines = resp.iter_lines()
    next(line for line in lines if line.startswith("data: ") and '"delta"' in line)
    return lines


def test_a_rename_during_a_reply_is_kept(server: ServerProcess) -> None:
    """Before: the reply's saves wrote the title it had read; the rename was silently undone."""
    with httpx.Client(base_url=server.url, timeout=120) as c:
        sid = c.post("/api/sessions/import", json=[{"role": "user", "content": "Hello"}]).json()["id"]
        body = {"messages": LONG_STORY, "session_id": sid, "params": {"max_tokens": 120, "temperature": 0}}
        with c.stream("POST", "/api/chat/stream", json=body) as resp:
            rest = first_delta(resp)
            renamed = c.patch(f"/api/sessions/{sid}", json={"title": "Renamed while streaming"})
            assert renamed.status_code == 200
            for _ in rest:
                pass
        doc = c.get(f"/api/sessions/{sid}").json()
        assert doc["title"] == "Renamed while streaming"
        assert doc["messages"][-1]["role"] == "assistant" and doc["messages"][-1]["content"]


def test_two_turns_on_one_session_are_both_kept(server: ServerProcess) -> None:
    """Before: the second turn had read the session before the first was saved, and its save dropped the
    first reply. Now it waits for the first and continues from it."""
    with httpx.Client(base_url=server.url, timeout=180) as c:
        sid = c.post(
            "/api/sessions/import",
            json=[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}],
        ).json()["id"]
        first = {"messages": LONG_STORY, "session_id": sid, "params": {"max_tokens": 60, "temperature": 0}}
        second = {
            "messages": [{"role": "user", "content": "Second question"}],
            "session_id": sid,
            "params": {"max_tokens": 8},
        }
        with c.stream("POST", "/api/chat/stream", json=first) as resp:
            rest = first_delta(resp)
            done: dict[str, Any] = {}
            t = threading.Thread(target=lambda: done.update(r=c.post("/api/chat", json=second)))
            t.start()
            for _ in rest:
                pass
        t.join(180)
        assert done["r"].status_code == 200, done["r"].text[:300]
        messages = c.get(f"/api/sessions/{sid}").json()["messages"]
        users = [m["content"] for m in messages if m["role"] == "user"]
        assert users == ["Hello", LONG_STORY[0]["content"], "Second question"], users
        assert [m["role"] for m in messages] == ["user", "assistant"] * 3
        assert all(m["content"] for m in messages)
