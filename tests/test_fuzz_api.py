"""Hypothesis against every route that takes input, in process (create_app + TestClient, the real model).

Bodies are mostly invalid; the few valid ones generate one token (generation.max_tokens: 1). Every answer is
below 500 with our error shape and no traceback, and a refused request changes nothing: the sessions,
presets and trash folders are byte-for-byte as before. Ids and names get path-traversal attempts, uploads
get the 10 MB limit, and Gradio's file routes get every encoding of a path outside the allowed folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.browser.harness import ROOT, require_model
from tests.test_markup import html_tokens
from webui.markup import escape_text, unescape_text

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
PASSWD = "root:x:0:0"
COUNTS: dict[str, int] = {}

TRAVERSAL = [
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..\\..\\etc\\passwd",
    "/etc/passwd",
    "//etc/passwd",
    "....//....//etc/passwd",
    "..",
    ".",
    "~root",
    "ＮＵＬ",
    "a\x00b",
    "．．／．．／etc／passwd",
    "friendly/../../../etc/passwd",
    "s-20250131-120000-a1b2c3/../../canary",
    "../canary",
    "../../canary",
    "..%00/canary",
    "%00",
    " ",
    "con",
    "x" * 300,
]


# --- the app --------------------------------------------------------------------------------------------


class Fuzz:
    def __init__(self, client: Any, base: Path) -> None:
        self.client = client
        self.base = base
        self.data = base / "data"
        self.watched = [self.data / "sessions", self.data / "presets", self.data / "trash", base / "outside"]
        self.canaries = [
            base / "canary.json",
            base / "canary.yaml",
            self.data / "canary",
            base / "outside" / "x",
        ]

    def snapshot(self) -> dict[str, str]:
        out = {}
        for folder in self.watched:
            for root, _dirs, files in os.walk(folder):
                for name in files:
                    p = Path(root) / name
                    out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
        for c in self.canaries:
            out[str(c)] = hashlib.sha1(c.read_bytes()).hexdigest() if c.exists() else "GONE"
        return out

    def check(
        self, route: str, r: Any, before: dict[str, str], *, sse: bool = False, sent: Any = None
    ) -> None:
        COUNTS[route] = COUNTS.get(route, 0) + 1
        route = f"{route} with {sent!r:.300}"
        text = r.text
        assert r.status_code < 500, f"{route}: {r.status_code} {text[:500]}"
        assert "Traceback" not in text and 'File "/' not in text, f"{route} leaks a traceback: {text[:500]}"
        assert PASSWD not in text, f"{route} served /etc/passwd"
        if r.status_code >= 400:
            if r.content == b'{"detail":"Not Found"}' and _has_control_char(sent):
                # Starlette's path patterns do not match a newline, so such a path falls through to
                # Gradio's 404; still a 404, only in Gradio's shape (a known, harmless inconsistency)
                assert self.snapshot() == before
                return
            assert r.content.startswith(b'{"error":'), f"{route}: not our error shape: {text[:300]}"
            err = r.json()["error"]
            assert isinstance(err["type"], str) and isinstance(err["message"], str) and err["message"], err
            assert self.snapshot() == before, (
                f"{route}: a refused request ({r.status_code}) changed files: {text}"
            )
        elif sse:
            assert "internal_error" not in text, text[:500]


def _has_control_char(value: Any) -> bool:
    if isinstance(value, str):
        return re.search(r"[\x00-\x1f]", value) is not None
    return isinstance(value, tuple | list) and any(_has_control_char(v) for v in value)


@pytest.fixture(scope="module")
def fz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    model = require_model()
    from fastapi.testclient import TestClient

    from engine.config import load_settings
    from webui.app import create_app

    base = tmp_path_factory.mktemp("fuzz-inprocess")
    (base / "models").mkdir()
    (base / "models" / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x07" * 4096)
    (base / "outside").mkdir()
    for c in (base / "canary.json", base / "canary.yaml", base / "outside" / "x"):
        c.write_text('{"canary": true}')
    settings_, warnings = load_settings(
        None,
        overrides={
            "data_dir": str(base / "data"),
            "models_dir": str(base / "models"),
            "model": {"path": str(model), "n_ctx": 512, "n_threads": 1, "n_gpu_layers": 0},
            "generation": {"max_tokens": 1, "temperature": 0, "seed": 1},
        },
    )
    app = create_app(settings_, warnings=warnings)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        (base / "data" / "canary").write_text("canary")
        f = Fuzz(client, base)
        r = client.post(
            "/api/chat", json={"messages": [{"role": "user", "content": "hi"}], "session_id": "new"}
        )
        assert r.status_code == 200, r.text
        f.sid = r.json()["session_id"]  # type: ignore[attr-defined]
        yield f
    total = sum(COUNTS.values())
    print(f"\nfuzz: {total} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))


# --- strategies -----------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(TRAVERSAL) | st.text(max_size=40)
roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "", "USER"]) | st.text(
    max_size=8
)
param_names = st.sampled_from(
    ["temperature", "top_p", "top_k", "min_p", "max_tokens", "seed", "stop", "grammar", "repeat_penalty", "x"]
)
params = st.dictionaries(param_names, json_values, max_size=4).map(
    lambda d: {**d, "max_tokens": 1} if "max_tokens" not in d or d["max_tokens"] is None else d
)


@st.composite
def chat_bodies(draw: Any) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    messages = draw(
        st.lists(
            st.fixed_dictionaries({"role": roles, "content": st.text(max_size=30) | json_values}),
            max_size=3,
        )
        | json_values
    )
    body: dict[str, Any] = {"messages": messages}
    if draw(st.booleans()):
        body["params"] = draw(params | json_values)
    if draw(st.booleans()):
        body["preset"] = draw(st.none() | st.sampled_from(["friendly", "nope"]) | names)
    if draw(st.booleans()):
        body["session_id"] = draw(
            st.none() | st.sampled_from(["new", "s-20250131-120000-a1b2c3"]) | names | st.just("EXISTING")
        )
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.text(max_size=8))] = draw(json_values)
    return body


@st.composite
def openai_bodies(draw: Any) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    content = st.text(max_size=30) | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", ""]), "text": st.text(max_size=10)}
        )
    )
    body: dict[str, Any] = {
        "messages": draw(
            st.lists(st.fixed_dictionaries({"role": roles, "content": content | json_values}), max_size=3)
            | json_values
        )
    }
    for key in (
        "temperature",
        "top_p",
        "max_tokens",
        "stream",
        "seed",
        "stop",
        "model",
        "n",
        "stream_options",
    ):
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(json_values)
    if body.get("max_tokens") is None:
        body["max_tokens"] = 1
    return body


def session_docs() -> Any:
    ours = st.fixed_dictionaries(
        {
            "schema_version": st.sampled_from([1, 0, 2, 99, "1", None]),
            "messages": st.lists(
                st.fixed_dictionaries({"role": roles, "content": st.text(max_size=20) | json_values}),
                max_size=3,
            )
            | json_values,
        },
        optional={"id": names, "title": json_values, "params": json_values, "character": json_values},
    )
    openai = st.lists(st.fixed_dictionaries({"role": roles, "content": st.text(max_size=20)}), max_size=3)
    tgw = st.fixed_dictionaries({"internal": json_values, "visible": json_values})
    nan = st.just(b'{"schema_version": 1, "messages": [], "x": NaN}')
    return (
        (ours | openai | tgw | json_values).map(lambda d: json.dumps(d).encode())
        | st.binary(max_size=200)
        | nan
    )


def card_files() -> Any:
    card = st.fixed_dictionaries(
        {"spec": st.sampled_from(["chara_card_v2", "chara_card_v3", "x"]), "data": json_values},
        optional={"spec_version": json_values, "name": names},
    )
    v1 = st.fixed_dictionaries({"name": names, "description": json_values, "first_mes": json_values})
    json_cards = (card | v1 | json_values).map(lambda d: json.dumps(d).encode())
    yaml_like = st.text(max_size=200).map(str.encode)
    png = st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)
    return st.tuples(
        names | st.sampled_from(["card.png", "card.json", "c.yaml", "../../x.yaml", "/etc/passwd"]),
        json_cards | yaml_like | png | st.binary(max_size=200),
    )


def quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="%") or "%20"


class Raw:
    """A response to a request sent straight to the ASGI app, with the path exactly as given: httpx (and so
    TestClient) would remove '..' segments first, which a real attacker's client need not do."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.content = status, body
        self.text = body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def raw_request(fz: Fuzz, method: str, raw_path: str, body: bytes = b"") -> Raw:
    path, _, query = raw_path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": urllib.parse.unquote(path),  # what uvicorn passes on: decoded, dot segments kept
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }

    async def call() -> Raw:
        sent = False
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await fz.client.app(scope, receive, send)
        return Raw(status, b"".join(chunks))

    return fz.client.portal.call(call)  # type: ignore[no-any-return]


# --- the routes -----------------------------------------------------------------------------------------


def _chat_body(fz: Fuzz, body: Any) -> Any:
    if isinstance(body, dict) and body.get("session_id") == "EXISTING":
        body = {**body, "session_id": fz.sid}  # type: ignore[attr-defined]
    return body


@FUZZ
@given(body=chat_bodies())
def test_fuzz_chat(fz: Fuzz, body: Any) -> None:
    before = fz.snapshot()
    r = fz.client.post("/api/chat", json=_chat_body(fz, body))
    fz.check("POST /api/chat", r, before, sent=body)
    if r.status_code == 200:
        assert isinstance(r.json()["reply"], str) and r.json()["metrics"]["completion_tokens"] <= 1


@FUZZ
@given(body=chat_bodies())
def test_fuzz_chat_stream(fz: Fuzz, body: Any) -> None:
    before = fz.snapshot()
    r = fz.client.post("/api/chat/stream", json=_chat_body(fz, body))
    fz.check("POST /api/chat/stream", r, before, sse=True, sent=body)
    if r.status_code == 200:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert '"done":true' in r.text or "event: error" in r.text, r.text[:300]


@FUZZ
@given(body=openai_bodies())
def test_fuzz_openai_chat_completions(fz: Fuzz, body: Any) -> None:
    before = fz.snapshot()
    r = fz.client.post("/v1/chat/completions", json=body)
    fz.check("POST /v1/chat/completions", r, before, sse=True, sent=body)
    if r.status_code >= 400:
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}


@FUZZ
@given(data=session_docs())
def test_fuzz_sessions_import(fz: Fuzz, data: bytes) -> None:
    before = fz.snapshot()
    r = fz.client.post("/api/sessions/import", content=data, headers={"content-type": "application/json"})
    fz.check("POST /api/sessions/import", r, before, sent=data)
    if r.status_code == 200:  # a new id, never an overwrite
        new = fz.data / "sessions" / f"{r.json()['id']}.json"
        assert new.is_file() and str(new) not in before


@FUZZ
@given(upload=card_files())
def test_fuzz_presets_import(fz: Fuzz, upload: tuple[str, bytes]) -> None:
    filename, content = upload
    before = fz.snapshot()
    r = fz.client.post("/api/presets/import", files={"file": (filename, content)})
    fz.check("POST /api/presets/import", r, before, sent=upload)
    if r.status_code == 200:
        name = r.json()["name"]
        assert "/" not in name and "\\" not in name and ".." not in name, name
        assert (fz.data / "presets").is_dir()


@FUZZ
@given(
    name=names,
    body=json_values | st.dictionaries(st.sampled_from(["title", "greeting", "sampling"]), json_values),
)
def test_fuzz_presets_put(fz: Fuzz, name: str, body: Any) -> None:
    before = fz.snapshot()
    r = raw_request(fz, "PUT", f"/api/presets/{quoted(name)}", json.dumps(body).encode())
    fz.check("PUT /api/presets/{name}", r, before, sent=(name, body))
    if r.status_code == 200:
        saved = [p for p in (fz.data / "presets").rglob("*") if p.is_file()]
        assert all(p.resolve().is_relative_to((fz.data / "presets").resolve()) for p in saved)


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {
            "path": names
            | st.sampled_from(["bad.gguf", "nope.gguf", "../models/bad.gguf", str(ROOT / "README.md")])
        },
        optional={"n_ctx": json_values, "n_gpu_layers": json_values, "flash_attn": json_values},
    )
    | json_values
)
def test_fuzz_models_load(fz: Fuzz, body: Any) -> None:
    before = fz.snapshot()
    model = fz.client.get("/api/health").json()["model"]
    r = fz.client.post("/api/models/load", json=body)
    fz.check("POST /api/models/load", r, before, sent=body)
    assert r.status_code != 200, f"loaded something: {body}"
    assert fz.client.get("/api/health").json()["model"] == model, "a failed load changed the model"


ID_ROUTES = [
    ("GET", "/api/sessions/{}"),
    ("GET", "/api/sessions/{}/markdown"),
    ("GET", "/api/sessions/{}/prompt"),
    ("DELETE", "/api/sessions/{}"),
    ("GET", "/api/presets/{}"),
    ("GET", "/api/presets/{}/card.json"),
    ("GET", "/api/presets/{}/card.png"),
    ("DELETE", "/api/presets/{}"),
]


@FUZZ
@given(route=st.sampled_from(ID_ROUTES), name=names, raw=st.booleans())
def test_fuzz_ids_and_names_cannot_traverse(fz: Fuzz, route: tuple[str, str], name: str, raw: bool) -> None:
    method, template = route
    part = name if raw and "?" not in name and "#" not in name else quoted(name)
    before = fz.snapshot()
    r = raw_request(fz, method, template.format(part))
    fz.check(f"{method} {template}", r, before, sent=(part, name))
    if r.status_code == 200:  # only a plain name that exists (the PUT fuzz may have made one)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name), (method, part, r.text[:200])
    else:
        assert r.status_code in (400, 404, 405, 409), (method, part, r.status_code, r.text[:200])
    assert '"canary"' not in r.text


@FUZZ
@given(q=st.text(max_size=50) | st.sampled_from(TRAVERSAL))
def test_fuzz_session_search(fz: Fuzz, q: str) -> None:
    before = fz.snapshot()
    r = fz.client.get("/api/sessions", params={"q": q})
    fz.check("GET /api/sessions?q", r, before, sent=q)
    assert r.status_code == 200 and isinstance(r.json(), list)


FILE_TARGETS = [
    "/etc/passwd",
    "../../etc/passwd",
    "../../../../../../etc/passwd",
    "config/model_config.yaml",
    str(ROOT / "config" / "model_config.yaml"),
    str(ROOT / "models" / "README.md"),
    "canary.json",
    "data/canary",
    "sessions",
    "http://169.254.169.254/latest/meta-data/",  # no redirect or fetch (open redirect / SSRF, gradio #13593)
    "http://127.0.0.1:22/",
    "https://example.com/",
    "file:///etc/passwd",
]


def _encodings(path: str) -> list[str]:
    once = urllib.parse.quote(path, safe="")
    return [
        path,
        once,
        urllib.parse.quote(once, safe=""),
        path.replace("/", "\\"),
        path.replace("../", "..%2f"),
        path.replace("../", "%2e%2e/"),
        path.replace("../", "..%5c"),
        path.replace("/", "//"),
        "./" + path,
    ]


@FUZZ
@given(
    prefix=st.sampled_from(
        ["/gradio_api/file=", "/file=", "/gradio_api/file/", "/gradio_api/files=", "/static/"]
    ),
    target=st.sampled_from(FILE_TARGETS) | st.text(max_size=30),
    form=st.integers(0, 8),
    extra=st.sampled_from(["", "?x=1", "#frag", "%00", "/"]),
)
def test_fuzz_gradio_file_routes_serve_nothing_outside(
    fz: Fuzz, prefix: str, target: str, form: int, extra: str
) -> None:
    if target in ("canary.json", "data/canary", "sessions"):
        base = fz.base if target != "sessions" else fz.data / "sessions" / f"{fz.sid}.json"  # type: ignore[attr-defined]
        target = str(base / target) if target != "sessions" else str(base)
    path = prefix + _encodings(target)[form] + extra
    before = fz.snapshot()
    r = raw_request(fz, "GET", path)
    COUNTS["gradio file routes"] = COUNTS.get("gradio file routes", 0) + 1
    assert r.status_code < 500, (path, r.status_code, r.text[:300])
    body = r.content
    assert PASSWD.encode() not in body, path
    assert b"cors_origins" not in body, f"{path} served the config file"
    assert b'"canary"' not in body and body != b"canary", f"{path} served a file outside the allowed folders"
    assert b'"schema_version"' not in body, f"{path} served a session file"
    assert not 300 <= r.status_code < 400, f"{path} redirects ({r.status_code})"
    assert fz.snapshot() == before


# --- limits and the text escaping the UI relies on ------------------------------------------------------


def test_upload_limits(fz: Fuzz) -> None:
    big = b"x" * (10 * 1024 * 1024 + 1)
    before = fz.snapshot()
    for method, path, kw in (
        ("POST", "/api/sessions/import", {"content": big}),
        ("PUT", "/api/presets/big", {"content": big}),
        ("POST", "/api/presets/import", {"files": {"file": ("big.json", big)}}),
        ("POST", "/api/chat", {"content": b'{"messages": [{"role": "user", "content": "' + big + b'"}]}'}),
        (
            "POST",
            "/v1/chat/completions",
            {"content": b'{"messages": [{"role": "user", "content": "' + big + b'"}]}'},
        ),
    ):
        r = fz.client.request(
            method, path, headers={"content-type": "application/json"} if "content" in kw else {}, **kw
        )
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert r.json()["error"]["type"] == "too_large"
    r = fz.client.post("/gradio_api/upload", files={"files": ("big.bin", big)})
    assert r.status_code == 413, r.text[:200]
    assert fz.snapshot() == before
    just_under = json.dumps({"messages": [{"role": "user", "content": "y" * (9 * 1024 * 1024)}]}).encode()
    r = fz.client.post(
        "/api/sessions/import", content=just_under, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text[:200]  # a big session under the limit is fine


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("<>&;#`~ \nab/x!?1ltgamp")), max_size=60)
    | st.text(max_size=60)
)
def test_markup_escape_round_trips_and_leaves_no_tag(text: str) -> None:
    shown = escape_text(text)
    assert unescape_text(shown) == text
    assert html_tokens(shown) == [], shown  # nothing a CommonMark renderer would make an element of


def test_downloads_carry_no_secrets(tmp_path: Path) -> None:
    """Session, Markdown and card downloads hold no key, password or local path, even when all are set."""
    model = require_model()
    from fastapi.testclient import TestClient

    from engine.config import load_settings
    from webui.app import create_app

    secrets = ["api-KEY-5f1c", "pw-SECRET-77", "backend-KEY-9a0e"]
    settings_, warnings = load_settings(
        None,
        overrides={
            "data_dir": str(tmp_path / "data"),
            "model": {"path": str(model), "n_ctx": 512, "n_threads": 1},
            "generation": {"max_tokens": 4, "temperature": 0, "seed": 1},
            "server": {"api_key": secrets[0], "auth": f"me:{secrets[1]}"},
            "backend": {"api_key": secrets[2]},
        },
    )
    with TestClient(create_app(settings_, warnings=warnings), base_url="http://127.0.0.1") as c:
        c.headers["Authorization"] = f"Bearer {secrets[0]}"
        sid = c.post(
            "/api/chat",
            json={"messages": [{"role": "user", "content": "Hi"}], "session_id": "new", "preset": "friendly"},
        ).json()["session_id"]
        downloads = {
            "session": c.get(f"/api/sessions/{sid}").content,
            "markdown": c.get(f"/api/sessions/{sid}/markdown").content,
            "card.json": c.get("/api/presets/friendly/card.json").content,
            "card.png": c.get("/api/presets/friendly/card.png").content,
        }
        for name, body in downloads.items():
            assert body, name
            for secret in [*secrets, str(tmp_path), str(ROOT), "/root", "/home/"]:
                assert secret.encode() not in body, f"the {name} download holds {secret!r}"
        for path in (
            "/api/health",
            "/api/models",
            "/v1/models",
            "/openapi.json",
            "/config",
            "/gradio_api/info",
        ):
            text = c.get(path).text
            for secret in secrets:
                assert secret not in text, f"{path} shows {secret!r}"
