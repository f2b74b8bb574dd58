"""No function in engine/, webui/ or cli/ is longer than MAX_LINES: a long function is split by job
(issue 17). Lines are counted from the `def` (decorators excluded) to the function's last line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("engine", "webui", "cli")
MAX_LINES = 120


def function_lengths() -> list[tuple[int, str]]:
    """(lines, "path:line name") for every function and method, nested ones included."""
    found = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    found.append((length, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return found


def test_the_scan_sees_the_code() -> None:
    lengths = function_lengths()
    assert len(lengths) > 500  # every layer was read
    assert any(name.endswith(" build_ui") for _, name in lengths)


def test_no_function_is_longer_than_the_limit() -> None:
    offenders = sorted((n, name) for n, name in function_lengths() if n > MAX_LINES)
    report = "\n".join(f"  {n} lines: {name}" for n, name in reversed(offenders))
    assert not offenders, f"functions longer than {MAX_LINES} lines (split them by job):\n{report}"
