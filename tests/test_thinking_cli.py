"""The terminal client with a thinking model (an R1-style copy of the default GGUF): the thought on stderr,
indented, with its token count; --hide-thinking; /think."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import run_pipe
from tests.test_thinking_real import R1_TEMPLATE, with_template

pytestmark = pytest.mark.slow
NOTE = "Thinking budget reached; answering now."


@pytest.fixture(scope="module")
def r1(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_template(model_path, tmp_path_factory.mktemp("r1cli"), "r1.gguf", R1_TEMPLATE)


def test_thought_goes_to_stderr_indented_and_can_be_hidden(r1: Path, tmp_path: Path) -> None:
    base = ["--data-dir", str(tmp_path), "--model", str(r1), "-p", "max_tokens=30", "-p", "temperature=0"]
    out = run_pipe(base, ["/think budget 6", "Write a story."])
    assert out.returncode == 0, out.stderr
    assert f"  {NOTE}" in out.stderr.replace("\n", " ") or f"\n  {NOTE}" in out.stderr
    assert NOTE not in out.stdout and out.stdout.strip()
    assert "thought 6 tokens" in out.stderr
    hidden = run_pipe([*base, "--hide-thinking"], ["/think budget 6", "Write a story."])
    assert hidden.returncode == 0 and NOTE not in hidden.stderr + hidden.stdout
    off = run_pipe(base, ["/think off", "Write a story."])
    assert "thought" not in off.stderr and off.stdout.strip()
    bad = run_pipe(base, ["/think budget -3"])
    assert "thinking_budget" in bad.stderr
