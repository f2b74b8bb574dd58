"""Browser fixtures: one real server per test module, one Chromium per run, a page that fails the test on
any JavaScript error, and screenshots + the server log in test-artifacts/ when a test fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ServerProcess,
    artifact_dir,
    missing,
    require_chromium,
    start_server,
)
from tests.browser.ui import ChatPage

# Console messages that are not JavaScript errors of ours (none so far; keep this list short and explained).
BENIGN_CONSOLE: tuple[str, ...] = ()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


def save_artifacts(item: pytest.Item) -> str:
    """Screenshots of the item's open pages and the server log; returns a note naming the folder."""
    note = getattr(item, "_artifacts_note", None)
    if note:
        return str(note)
    folder = artifact_dir(item.nodeid)
    for i, page in enumerate(getattr(item, "_pages", [])):
        try:
            page.screenshot(path=str(folder / f"page{i}.png"), full_page=True)
            (folder / f"page{i}.html").write_text(page.content())
        except Exception as exc:  # the page may be gone already
            (folder / f"page{i}.error.txt").write_text(repr(exc))
    for i, chat in enumerate(getattr(item, "_chats", [])):
        (folder / f"page{i}.console.txt").write_text("\n".join(chat.console))
    for i, server in enumerate(getattr(item, "_servers", [])):  # the module's, and a test's own
        server.save_log(folder, f"server{i}.log" if i else "server.log")
    note = f"screenshots and server log saved in {folder}"
    item._artifacts_note = note  # type: ignore[attr-defined]
    print(f"\n[artifacts] {note}", file=sys.stderr)
    return note


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    rep = yield
    if rep.failed and rep.when in ("setup", "call", "teardown"):
        note = save_artifacts(item)
        longrepr = rep.longrepr
        if hasattr(longrepr, "addsection"):
            longrepr.addsection("artifacts", note)
        else:
            rep.sections.append(("artifacts", note))
    return rep


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(tmp_path_factory.mktemp("browser-server"))
    yield s
    s.stop()


@pytest.fixture
def open_page(browser: Any, server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[Any]:
    """open_page() -> ChatPage in a fresh browser context (its own localStorage). Fails on JS errors and on
    any error badge or error toast the page showed."""
    item = request.node
    item._servers = [server]
    item._pages = []
    pages: list[ChatPage] = []
    contexts = []

    def factory(*, locale: str = "en-US", srv: ServerProcess | None = None) -> ChatPage:
        ctx = browser.new_context(locale=locale, viewport={"width": 1280, "height": 1000})
        ctx.set_default_timeout(30_000)
        contexts.append(ctx)
        page = ctx.new_page()
        item._pages.append(page)
        if srv is not None and srv not in item._servers:
            item._servers.append(srv)
        chat = ChatPage(page, srv or server)
        pages.append(chat)
        item._chats = pages
        return chat

    yield factory
    errors = [e for chat in pages for e in chat.errors if not any(b in e for b in BENIGN_CONSOLE)]
    errors += [
        e for chat in pages for e in chat.error_badges()
    ]  # a user never sees Error for a normal action
    try:
        if errors:
            note = save_artifacts(item)
            pytest.fail(
                "JavaScript errors or error badges on the page:\n" + "\n".join(errors[:20]) + f"\n{note}"
            )
    finally:
        for ctx in contexts:
            ctx.close()


@pytest.fixture
def chat(open_page: Any) -> ChatPage:
    """One page, loaded."""
    return open_page().goto()
