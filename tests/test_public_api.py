"""The engine's public API is engine/__init__.py. The web UI and the terminal import only its names (`from
engine import ...`), and reach everything else through them: the Runtime's members (rt.sessions,
rt.presets, rt.personas, rt.lorebooks, rt.models, rt.sampling_presets, rt.tools) and methods (rt.turn,
rt.draft, rt.preview, ...), and the public types' methods. A new need is met there, never by importing an
engine module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("webui", "cli")


def engine_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) for every import of the engine in the other layers."""
    found = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
                    found += [(str(path.relative_to(ROOT)), node.module, a.name) for a in node.names]
                elif isinstance(node, ast.Import):
                    found += [
                        (str(path.relative_to(ROOT)), a.name, "*") for a in node.names if "engine" in a.name
                    ]
    return found


def test_the_public_names_resolve_and_are_listed_once() -> None:
    assert len(engine.__all__) == len(set(engine.__all__)) <= 30
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name
    assert {"Runtime", "Turn", "Delta", "Finished", "Session", "EngineError", "Settings"} <= set(
        engine.__all__
    )


def test_other_layers_import_only_public_names() -> None:
    problems = []
    for file, module, name in engine_imports():
        if module != "engine":
            hint = (
                f"use `from engine import {name}`" if name in engine.__all__ else "reach it through Runtime"
            )
            problems.append(
                f"{file}: {module}.{name} is past engine's public API (engine/__init__.py); {hint}"
            )
        elif name not in engine.__all__:
            problems.append(f"{file}: engine.{name} is not public")
    assert not problems, "\n".join(problems)


def test_no_layer_runs_a_turn_past_runtime_turn() -> None:
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for call in ("engine.stream(", "run_turn(", "require_backend()"):
                if call == "require_backend()" and path.name == "chat.py":
                    continue  # the chat tab checks the model before it cuts a chat for an edit
                assert call not in text, f"{path}: {call} (use Runtime.turn)"


def test_importing_the_engine_loads_nothing_it_does_not_use() -> None:
    """The model worker imports engine.backends: the package itself must stay light (no Gradio, no
    FastAPI, no llama_cpp, and none of the engine's own modules until a name is used)."""
    code = (
        "import sys, engine; "
        "heavy = ('gradio', 'fastapi', 'llama_cpp', 'engine.runtime', 'engine.turn'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
