"""Fuzz the API from its own /openapi.json: no 5xx, and every documented response matches its schema.

Routes that generate text (/api/chat*, /v1/chat/completions) or load models are left out of schemathesis,
since a valid body would run the model for many seconds per example. They get hypothesis bodies that are
always invalid instead: each must be a 4xx JSON error, answered before the model is touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.helpers import ServerProcess, assert_no_traceback, server_fixture
from tests.hubserver import LocalHub

pytestmark = pytest.mark.slow

GENERATING = r"^/api/chat|^/v1/chat/completions|^/api/models/load|/regenerate$|/continue$"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServerProcess]:
    # The Hub routes ask an empty local test Hub: a fuzzed repo gets the Hub's "not found", not the internet.
    with LocalHub() as hub:
        env = {"LLM_MODEL__N_CTX": "512", "HF_ENDPOINT": hub.url}
        yield from server_fixture(tmp_path_factory, "fuzz", model_path, env=env)


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(timeout=30) as c:
        yield c


# Every operation except those that generate text, listed so that
# each gets its own test id (schemathesis' lazy pytest loader breaks on pytest 9: no Function._nodeid).
OPERATIONS = [
    ("GET", "/api/health"),
    ("GET", "/api/sessions"),
    ("GET", "/api/sessions/{session_id}"),
    ("DELETE", "/api/sessions/{session_id}"),
    ("GET", "/api/sessions/{session_id}/markdown"),
    ("GET", "/api/sessions/{session_id}/prompt"),
    ("POST", "/api/sessions/import"),
    ("GET", "/api/presets"),
    ("GET", "/api/presets/{name}"),
    ("PUT", "/api/presets/{name}"),
    ("DELETE", "/api/presets/{name}"),
    ("POST", "/api/presets/import"),
    ("GET", "/api/presets/{name}/card.json"),
    ("GET", "/api/presets/{name}/card.png"),
    ("GET", "/api/gpu"),
    ("GET", "/api/models"),
    ("GET", "/v1/models"),
]
MAX_EXAMPLES = 40


def fuzz(operation: Any) -> None:
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(
        max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(
            checks=[not_a_server_error, response_schema_conformance], timeout=30
        )
        assert_no_traceback(response.text)

    check()


def schema_operations(api_schema: Any) -> set[tuple[str, str]]:
    return {(op.method.upper(), op.path) for op in (r.ok() for r in api_schema.get_all_operations())}


# Positive mode only: most parameters are free-form strings, so schemathesis' negative mode has nothing
# to break there. Invalid input is fuzzed below and in tests/test_http.py and tests/test_security.py.
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=lambda v: str(v))
def test_api_conforms(api_schema: Any, method: str, path: str) -> None:
    fuzz(api_schema[path][method])


def test_other_operations_conform(api_schema: Any) -> None:
    """Routes added since OPERATIONS was written are fuzzed too (add them to OPERATIONS for their own id)."""
    ops = schema_operations(api_schema)
    assert set(OPERATIONS) <= ops, set(OPERATIONS) - ops
    assert ("POST", "/v1/chat/completions") in ops and ("POST", "/api/chat/stream") in ops
    for method, path in sorted(ops - set(OPERATIONS)):
        if not re.search(GENERATING, path):
            fuzz(api_schema[path][method])


# --- always-invalid bodies for the routes that generate --------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
good_message = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=20)})


def bad_messages() -> st.SearchStrategy[Any]:
    """A `messages` value that is never valid for either API."""
    return st.one_of(
        st.just([]),
        json_scalars,
        st.dictionaries(st.text(max_size=5), json_scalars, max_size=2),
        st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.text(max_size=10).filter(
                        lambda r: r not in ("user", "assistant", "system", "developer")
                    ),
                    "content": st.text(max_size=10),
                }
            ),
            min_size=1,
            max_size=3,
        ),
        st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": st.integers()}), min_size=1, max_size=2
        ),
    )


@st.composite
def invalid_chat_bodies(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["messages", "param", "unknown_param", "not_object"]))
    if kind == "not_object":
        return draw(st.one_of(json_scalars, st.lists(json_values, max_size=3)))
    body: dict[str, Any] = {"messages": draw(st.lists(good_message, min_size=1, max_size=2))}
    if kind == "messages":
        body["messages"] = draw(bad_messages())
    elif kind == "param":
        name, value = draw(
            st.sampled_from(
                [
                    ("temperature", st.floats(min_value=5.01, allow_nan=False) | st.floats(max_value=-0.01)),
                    ("max_tokens", st.integers(max_value=0) | st.integers(min_value=131073)),
                    ("top_p", st.floats(min_value=1.01, allow_nan=False)),
                    ("seed", st.integers(max_value=-2)),
                    ("top_k", st.text(min_size=1).filter(lambda t: not t.strip().lstrip("-").isdigit())),
                ]
            ).flatmap(lambda nv: st.tuples(st.just(nv[0]), nv[1]))
        )
        body["params"] = {name: value, "max_tokens": 1} if name != "max_tokens" else {name: value}
    else:
        body["params"] = {
            draw(st.sampled_from(["temprature", "max_token", "n", "bogus"])): 1,
            "max_tokens": 1,
        }
    return body


def to_openai(body: Any) -> Any:
    """The same invalid request for /v1/chat/completions: params at the top level."""
    if not isinstance(body, dict) or "params" not in body:
        return body
    params = dict(body["params"])
    if any(k in params for k in ("temprature", "max_token", "n", "bogus")):
        return {"messages": []}  # unknown fields are ignored there by design; keep it invalid another way
    if "temperature" in params and params["temperature"] <= 2.0 and params["temperature"] >= 0:
        params["temperature"] = 9
    return {"messages": body["messages"], **params}


@given(
    body=invalid_chat_bodies(),
    route=st.sampled_from(["/api/chat", "/api/chat/stream", "/v1/chat/completions"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_generating_routes_reject_invalid_bodies(http: httpx.Client, body: Any, route: str) -> None:
    payload = to_openai(body) if route.startswith("/v1") else body
    resp = http.post(route, content=json.dumps(payload), headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, (route, payload, resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert isinstance(err["type"], str) and isinstance(err["message"], str) and err["message"]
    assert_no_traceback(resp.text)


@given(raw=st.binary(max_size=64).filter(lambda b: not _is_json(b)))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_generating_routes_reject_non_json(http: httpx.Client, raw: bytes) -> None:
    for route in ("/api/chat/stream", "/v1/chat/completions"):
        resp = http.post(route, content=raw, headers={"content-type": "application/json"})
        assert resp.status_code == 400, (route, raw, resp.text[:300])
        assert_no_traceback(resp.text)


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return False
    return True
