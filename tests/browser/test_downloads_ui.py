"""A new user with no model file gets one in the browser: type a repo, watch it download from the local
test Hub, read the estimate, load it, and find its settings remembered. Cancel leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import MODEL, ServerProcess, start_server
from tests.browser.ui import ChatPage
from tests.hubserver import HubFile, HubRepo, LocalHub, standard_hub

NAME = "SmolLM2-135M-Instruct-Q4_1.gguf"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    h = standard_hub(tmp_path_factory.mktemp("hub"))
    h.repos["me/SmolLM2-GGUF"] = HubRepo(files={NAME: HubFile(MODEL)})
    with h:
        yield h


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty-models")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, hub: LocalHub, models_dir: Path
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("downloads-ui")
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(base / "hf-home"), "HF_TOKEN": ""}
    s = start_server(base, extra_config=f"models_dir: {models_dir}\n", env=env)
    yield s
    s.stop()


def open_downloads(chat: ChatPage) -> None:
    chat.open_tab("GPU & models")
    chat.page.locator("#dl-section").get_by_text("Download from Hugging Face").click()
    chat.page.locator("#dl-repo textarea, #dl-repo input").first.wait_for()


def progress(chat: ChatPage) -> str:
    return str(chat.page.locator("#dl-progress").inner_text())


def test_download_watch_progress_then_load(chat: ChatPage, hub: LocalHub, models_dir: Path) -> None:
    open_downloads(chat)
    chat.fill("dl-repo", "https://huggingface.co/me/SmolLM2-GGUF")
    chat.click("dl-list")
    chat.wait_for(lambda: "1 GGUF file" in progress(chat), "the repo's files")
    assert NAME in chat.value("dl-file")
    hub.rate = 25_000_000  # about four seconds for the 98 MB file, so progress shows
    try:
        chat.click("dl-start")
        seen = chat.wait_for(lambda: (t := progress(chat)) and "%" in t and "MB" in t and t, "progress")
        assert " of " in seen and "░" in seen, seen  # bytes of the total, and a bar not yet full
        chat.wait_for(lambda: "Downloaded" in progress(chat), "the download to finish", timeout=120)
    finally:
        hub.rate = None
    assert (models_dir / NAME).is_file() and not list((models_dir / ".downloads").glob("*"))
    chat.wait_for(lambda: NAME in chat.value("gpu-model-file"), "the new file picked")
    estimate = chat.wait_for(
        lambda: (t := chat.page.locator("#gpu-estimate").inner_text()) and "Fits in RAM" in t and t,
        "the estimate before loading",
    )
    assert "KV cache" in estimate and "free" in estimate, estimate
    chat.fill("gpu-nctx", "1536")
    chat.wait_for(
        lambda: "KV cache 34 MB" in chat.page.locator("#gpu-estimate").inner_text(), "a new estimate"
    )
    chat.click("gpu-load")
    chat.wait_for(lambda: "Loaded" in chat.page.locator("#gpu-load-status").inner_text(), "the load", 120)
    health = chat.api("GET", "/api/health").json()
    assert health["model"]["name"] == NAME and health["model"]["n_ctx"] == 1536
    row = {m["name"]: m for m in chat.api("GET", "/api/models").json()["available"]}[NAME]
    assert row["settings"]["load"]["n_ctx"] == 1536  # remembered for the next time it is picked


def test_cancel_in_the_browser(chat: ChatPage, hub: LocalHub, models_dir: Path) -> None:
    open_downloads(chat)
    chat.fill("dl-repo", "me/Tiny-GGUF:Q4_K_M")
    chat.click("dl-list")
    chat.wait_for(lambda: "GGUF file" in progress(chat), "the repo's files")
    assert "tiny-Q4_K_M.gguf" in chat.value("dl-file")
    assert chat.page.locator("#dl-mmproj").is_visible()  # the projector is offered
    hub.rate = 200_000
    try:
        chat.click("dl-start")
        chat.wait_for(lambda: "%" in progress(chat), "the download to start")
        chat.click("dl-cancel")
        chat.wait_for(lambda: "Cancelled" in progress(chat), "the cancel")
    finally:
        hub.rate = None
    assert not (models_dir / "tiny-Q4_K_M.gguf").exists()
    assert not list((models_dir / ".downloads").glob("*.part"))
