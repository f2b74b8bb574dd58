"""The Hub and download routes on the real server, pointed at the local test Hub with HF_ENDPOINT: list a
repo, download with progress, cancel, gated repos, then load what was downloaded and find its settings
remembered and its estimate in GET /api/models."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, assert_error
from tests.hubserver import GATED_TOKEN, HubFile, HubRepo, LocalHub, standard_hub

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[LocalHub]:
    h = standard_hub(tmp_path_factory.mktemp("hub"))
    h.repos["me/SmolLM2-GGUF"] = HubRepo(files={"SmolLM2-135M-Instruct-Q4_1.gguf": HubFile(model_path)})
    with h:
        yield h


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, hub: LocalHub
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("hub-http")
    models = base / "models"
    models.mkdir()
    try:
        os.link(model_path, models / model_path.name)
    except OSError:
        (models / model_path.name).symlink_to(model_path.resolve())
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(base / "hf-home"),
        "HF_TOKEN": "",
        "LLM_MODELS_DIR": str(models),
        "LLM_MODEL__N_CTX": "1024",
        "LLM_MODEL__N_GPU_LAYERS": "0",
    }
    s = ServerProcess(base / "data", model=models / model_path.name, env=env, log_path=base / "server.log")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def client(server: ServerProcess, hub: LocalHub) -> Iterator[httpx.Client]:
    hub.rate = None
    with server.client() as c:
        yield c


def wait_state(client: httpx.Client, job_id: str, *states: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/api/models/downloads/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["state"] in states:
            return dict(r.json())
        time.sleep(0.05)
    raise AssertionError(f"download {job_id} never reached {states}: {r.json()}")


def test_list_a_repo(client: httpx.Client) -> None:
    r = client.get("/api/hub/files", params={"repo": "https://huggingface.co/me/Tiny-GGUF"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["repo"] == "me/Tiny-GGUF" and doc["commit"] and doc["gated"] is False
    files = {f["name"]: f for f in doc["files"]}
    assert files["tiny-Q4_K_M.gguf"]["quantization"] == "Q4_K_M" and files["tiny-Q4_K_M.gguf"]["size_bytes"]
    assert files["tiny-Q2_K-00001-of-00002.gguf"]["parts"] == 2
    assert files["tiny-Q8_0.gguf"]["mmproj"] == ["mmproj-tiny-F16.gguf"]


def test_listing_errors_are_clear(client: httpx.Client) -> None:
    assert_error(client.get("/api/hub/files", params={"repo": "not a repo"}), 400, "repo")
    assert_error(client.get("/api/hub/files", params={"repo": "me/Missing"}), 404, "me/Missing")
    assert_error(client.get("/api/hub/files", params={"repo": "me/Tiny-GGUF", "revision": "v9"}), 404)
    assert_error(client.get("/api/hub/files"), 400, "repo")


def test_download_with_progress_then_it_is_listed_with_an_estimate(
    client: httpx.Client, hub: LocalHub
) -> None:
    hub.rate = 2_000_000
    r = client.post("/api/models/download", json={"repo": "me/Tiny-GGUF", "file": "tiny-Q4_K_M.gguf"})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    moving = wait_state(client, job_id, "downloading", "done")
    deadline = time.monotonic() + 30
    while moving["state"] == "downloading" and not moving["bytes_done"] and time.monotonic() < deadline:
        moving = client.get(f"/api/models/downloads/{job_id}").json()
    assert moving["bytes_total"] > 3_000_000 and moving["bytes_done"] > 0
    hub.rate = None
    done = wait_state(client, job_id, "done", "failed")
    assert done["state"] == "done", done
    assert job_id in [d["id"] for d in client.get("/api/models/downloads").json()]
    available = {m["name"]: m for m in client.get("/api/models").json()["available"]}
    tiny = available["tiny-Q4_K_M.gguf"]
    assert tiny["quantization"] == "Q4_K_M"
    assert tiny["estimate"]["verdict"] and tiny["estimate"]["message"]
    assert tiny["settings"] == {"load": {}, "sampling": {}}


def test_cancel(client: httpx.Client, hub: LocalHub, server: ServerProcess) -> None:
    hub.rate = 300_000
    r = client.post("/api/models/download", json={"repo": "me/Tiny-GGUF:Q8_0"})
    job_id = r.json()["id"]
    r = client.delete(f"/api/models/downloads/{job_id}")
    assert r.status_code == 200 and r.json()["id"] == job_id
    assert wait_state(client, job_id, "cancelled", "done", "failed")["state"] == "cancelled"
    models = Path(client.get("/api/models").json()["available"][0]["path"]).parent
    assert not (models / "tiny-Q8_0.gguf").exists()
    assert not list((models / ".downloads").glob("*.part"))


def test_download_errors(client: httpx.Client) -> None:
    assert_error(client.get("/api/models/downloads/d-nothing"), 404)
    assert_error(client.delete("/api/models/downloads/d-nothing"), 404)
    assert_error(client.post("/api/models/download", json={"repo": "me/Huge-GGUF"}), 507, "disk space")
    assert_error(client.post("/api/models/download", json={"repo": "me/Tiny-GGUF", "file": "Q3_K"}), 404)
    assert_error(client.post("/api/models/download", json={"repo": "me/Tiny-GGUF", "x": 1}), 400, "x")
    assert_error(client.post("/api/models/download", json={"repo": "me/Gated-GGUF"}), 403, "token")


def test_gated_download_uses_the_token_and_keeps_it_nowhere(
    client: httpx.Client, server: ServerProcess
) -> None:
    r = client.post("/api/models/download", json={"repo": "me/Gated-GGUF", "token": GATED_TOKEN})
    assert r.status_code == 200, r.text
    done = wait_state(client, r.json()["id"], "done", "failed")
    assert done["state"] == "done", done
    assert GATED_TOKEN not in str(done) and GATED_TOKEN not in client.get("/api/models/downloads").text
    assert GATED_TOKEN not in server.log_text()
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            assert GATED_TOKEN.encode() not in path.read_bytes(), path


def test_download_the_real_model_load_it_and_it_remembers(client: httpx.Client) -> None:
    r = client.post("/api/models/download", json={"repo": "me/SmolLM2-GGUF"})
    done = wait_state(client, r.json()["id"], "done", "failed")
    assert done["state"] == "done", done
    name = "SmolLM2-135M-Instruct-Q4_1.gguf"
    est = client.get("/api/models/estimate", params={"name": name, "n_ctx": 768, "n_gpu_layers": "auto"})
    assert est.status_code == 200, est.text
    assert est.json()["n_ctx"] == 768 and est.json()["verdict"] in ("fits_cpu", "fits_gpu", "partial_gpu")
    r = client.post("/api/models/load", json={"path": name, "n_ctx": 768, "n_gpu_layers": "auto"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name and r.json()["n_ctx"] == 768
    row = {m["name"]: m for m in client.get("/api/models").json()["available"]}[name]
    assert row["settings"]["load"]["n_ctx"] == 768
    assert isinstance(row["settings"]["load"]["n_gpu_layers"], int)
    assert row["estimate"]["n_ctx"] == 768  # the estimate uses the remembered settings
    r = client.put(f"/api/models/{name}/settings", json={"sampling": {"temperature": 0.25}})
    assert r.status_code == 200 and r.json()["sampling"] == {"temperature": 0.25}
    assert client.get(f"/api/models/{name}/settings").json()["sampling"] == {"temperature": 0.25}
    assert_error(client.put(f"/api/models/{name}/settings", json={"sampling": {"temperature": "x"}}), 400)
    reply = client.post(
        "/api/chat", json={"messages": [{"role": "user", "content": "Hi"}], "params": {"max_tokens": 4}}
    )
    assert reply.status_code == 200, reply.text


def test_cli_pull_through_the_server(server: ServerProcess) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "cli", "--url", server.url, "--pull", "me/Tiny-GGUF:tiny-Q8_0.gguf"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Saved tiny-Q8_0.gguf in the server at" in proc.stderr
    with server.client() as c:
        assert "tiny-Q8_0.gguf" in {m["name"] for m in c.get("/api/models").json()["available"]}
