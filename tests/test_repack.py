"""Weight repacking (llama.cpp's extra buffer types): off on Intel AMX, where it crashes on the first decode,
unless the config forces it; and the choice really reaches llama.cpp's model params."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.llama_cpp import LlamaCppBackend
from engine.backends.repack import cpu_flags, repack_allowed
from engine.config import load_settings
from engine.errors import ConfigError

XEON_AMX = "flags\t\t: fpu sse sse2 avx2 avx512f amx_bf16 avx512_fp16 amx_tile amx_int8\n"
EPYC = "flags\t\t: fpu sse sse2 avx2 avx512f avx512_bf16\n"


def test_cpu_flags_read_x86_and_arm(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\n" + XEON_AMX)
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
    assert "amx_int8" in cpu_flags(x86)
    assert cpu_flags(arm) == {"fp", "asimd", "sve"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_turns_repacking_off_on_amx_only() -> None:
    on, why = repack_allowed("auto", frozenset(XEON_AMX.split(":")[1].split()))
    assert on is False and "AMX" in why and "amx_int8" in why
    assert repack_allowed("auto", frozenset(EPYC.split(":")[1].split())) == (True, "auto")
    assert repack_allowed(True, frozenset({"amx_int8"}))[0] is True  # forced on: the user's call
    assert repack_allowed(False, frozenset())[0] is False


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("true", True), ("false", False)])
def test_config_key_takes_yaml_and_env_values(value: str, expected: object) -> None:
    settings, _ = load_settings(environ={"LLM_MODEL__REPACK": value})
    assert settings.model.repack == expected


def test_config_key_rejects_other_values() -> None:
    with pytest.raises(ConfigError, match="repack"):
        load_settings(environ={}, overrides={"model": {"repack": "sometimes"}})


def test_repack_off_reaches_llama_cpp_and_the_model_still_decodes(model_path: Path) -> None:
    settings, _ = load_settings(
        environ={},
        overrides={"model": {"path": str(model_path), "n_ctx": 512, "n_threads": 1, "repack": False}},
    )
    backend = LlamaCppBackend(settings.model, model_path)
    try:
        assert backend.llm.model_params.use_extra_bufts is False
        assert backend.model_info()["repack"] is False
        import llama_cpp

        assert llama_cpp.llama_model_default_params().use_extra_bufts is True  # the patch was undone
        text = backend.llm.create_completion("Hello", max_tokens=4, temperature=0)["choices"][0]["text"]
        assert isinstance(text, str)
    finally:
        backend.close()
