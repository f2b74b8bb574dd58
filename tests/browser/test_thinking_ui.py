"""A thinking model in the chat tab (an R1-style copy of the default GGUF, a thinking budget of 6): the
thought folds into a collapsible block above the answer, titled with its token count and its duration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.harness import MODEL, ServerProcess, start_server
from tests.test_thinking_real import R1_TEMPLATE, with_template

NOTE = "Thinking budget reached; answering now."


@pytest.fixture(scope="module")
def r1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    r1 = with_template(MODEL, tmp_path_factory.mktemp("r1ui"), "r1.gguf", R1_TEMPLATE)
    base = tmp_path_factory.mktemp("r1-server")
    s = start_server(base, extra_config=f"  path: {r1}\n", env={"LLM_GENERATION__THINKING_BUDGET": "6"})
    yield s
    s.stop()


def test_the_thought_folds_above_the_answer(open_page: Any, r1_server: ServerProcess) -> None:
    chat = open_page(srv=r1_server).goto()
    doc = chat.send("Write a story about a cat.")
    reply = doc["messages"][-1]
    assert NOTE in reply["reasoning"] and reply["content"].strip() and NOTE not in reply["content"]
    assert reply["metrics"]["reasoning_tokens"] == 6
    box = chat.page.locator("#chatbot")
    title = box.get_by_text(re.compile(r"Thought · 6 tokens"))
    title.first.wait_for()
    text = box.inner_text()
    assert re.search(r"Thought · 6 tokens[\s\S]{0,40}\d+(\.\d+)?\s?s", text), text[:600]
    assert text.index("Thought · 6 tokens") < text.index(reply["content"].strip()[:20])
    assert not box.get_by_text(NOTE).first.is_visible(), "the finished thought should be collapsed"
    title.first.click()  # it opens on a click
    box.get_by_text(NOTE).first.wait_for(state="visible")
