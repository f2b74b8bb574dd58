"""Security: CORS, the API key, the bind address and its warning, Gradio's file routes, path traversal."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


def test_lan_bind_without_auth_warns(tmp_path: Path, model_path: Path) -> None:
    port = free_port()
    err = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "webui", "--host", "0.0.0.0", "--port", str(port)]
    cmd += ["--data-dir", str(tmp_path / "data"), "--model", str(model_path)]
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **TEST_ENV}, stdout=subprocess.DEVNULL, stderr=err_file
        )
    try:
        text = wait_for(err, "WARNING", proc)
    finally:
        proc.kill()  # never leave a server bound to every interface
        proc.wait(15)
    assert "WARNING: binding to 0.0.0.0" in text
    assert "WITHOUT a password" in text
    assert "--api-key" in text and "--auth" in text


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
