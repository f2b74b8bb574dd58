"""Config: the shipped file, the seed system's keys, unknown keys, env overrides, bounds, gpu.required."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.config import DEFAULT_CONFIG, Settings, load_settings
from engine.errors import ConfigError, ModelUnavailable

SEED_STYLE = """\
model:
  path: {model}
  n_ctx: 4096
  n_gpu_layers: -1
  n_batch: 512
  f16_kv: true
  use_mmap: true
  use_mlock: false
  low_vram: false
  n_threads: 4
generation:
  temperature: 0.7
  top_p: 0.9
  max_tokens: 256
  repeat_penalty: 1.15
chat:
  system_prompt: "You are a pirate."
  assistant_name: Captain
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_loads_without_warnings() -> None:
    settings, warnings = load_settings(DEFAULT_CONFIG, environ={})
    assert warnings == []
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert settings.model.path == raw["model"]["path"]
    assert settings.model.path.endswith(".gguf")
    assert settings.model.n_ctx == raw["model"]["n_ctx"]
    assert settings.generation.temperature == raw["generation"]["temperature"]
    assert settings.chat.system_prompt == raw["chat"]["system_prompt"]
    assert settings.gpu.required is False
    assert settings.server.host == "127.0.0.1"  # loopback by default
    assert settings.server.api_key is None and settings.server.cors_origins == []


def test_shipped_config_documents_every_section() -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert set(Settings.model_fields) <= raw.keys()  # every section and top-level key is documented


def test_default_path_is_the_shipped_file() -> None:
    assert load_settings(environ={})[0] == load_settings(DEFAULT_CONFIG, environ={})[0]


def test_seed_style_config_loads_with_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_STYLE.format(model="models/x.gguf"))
    settings, warnings = load_settings(path, environ={})
    m = settings.model
    assert (m.path, m.n_ctx, m.n_gpu_layers, m.n_batch, m.n_threads) == ("models/x.gguf", 4096, -1, 512, 4)
    assert m.use_mmap is True and m.use_mlock is False
    assert m.cache_type_k == m.cache_type_v == "f16"  # f16_kv: true maps to an f16 KV cache
    g = settings.generation
    assert (g.temperature, g.top_p, g.max_tokens, g.repeat_penalty) == (0.7, 0.9, 256, 1.15)
    assert settings.chat.system_prompt == "You are a pirate."
    assert settings.chat.assistant_name == "Captain"
    assert len(warnings) == 2
    f16 = next(w for w in warnings if "f16_kv" in w)
    low = next(w for w in warnings if "low_vram" in w)
    assert str(path) in f16 and str(path) in low


def test_f16_kv_false_maps_to_f32(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  f16_kv: false\n")
    settings, warnings = load_settings(path, environ={})
    assert settings.model.cache_type_k == settings.model.cache_type_v == "f32"
    assert any("f16_kv" in w for w in warnings)


def test_seed_keys_at_top_level_move_into_model(tmp_path: Path) -> None:
    path = write(tmp_path, "model_path: models/y.gguf\nn_ctx: 1024\n")
    settings, _ = load_settings(path, environ={})
    assert settings.model.path == "models/y.gguf"
    assert settings.model.n_ctx == 1024


def test_env_lists_are_json_null_is_none_and_a_bad_list_names_its_variable() -> None:
    env = {
        "LLM_TOOLS__APPROVAL": '["get_time", "add"]',
        "LLM_SERVER__ALLOWED_HOSTS": '["chat.lan"]',
        "LLM_BACKEND__URL": "null",
        "LLM_GPU__REQUIRED": "true",
    }
    settings, _ = load_settings(environ=env)
    assert settings.tools.approval == ["get_time", "add"] and settings.server.allowed_hosts == ["chat.lan"]
    assert settings.backend.url is None and settings.gpu.required is True
    assert load_settings(environ={"LLM_TOOLS__APPROVAL": "auto"})[0].tools.approval == "auto"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"LLM_SERVER__ALLOWED_HOSTS": "chat.lan", "LLM_MODEL__N_CTX": "100"})
    assert "LLM_SERVER__ALLOWED_HOSTS" in info.value.message and "JSON" in info.value.message
    assert "N_CTX" not in info.value.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("model:\n  n_ctxx: 2048\n", "n_ctxx"),
        ("generation:\n  temprature: 0.5\n", "temprature"),
        ("chat:\n  sytem_prompt: hi\n", "sytem_prompt"),
        ("colour: blue\n", "colour"),
    ],
)
def test_unknown_key_is_an_error_naming_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert key in info.value.message
    assert str(path) in info.value.message
    assert info.value.field is not None and info.value.field.endswith(key)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found"):
        load_settings(missing, environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "model: [unclosed\n"), environ={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n", "list.yaml"), environ={})


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_STYLE.format(model="models/x.gguf"))
    env = {"LLM_MODEL__N_CTX": "2048", "LLM_GPU__REQUIRED": "true", "LLM_GENERATION__TEMPERATURE": "0.25"}
    settings, _ = load_settings(path, environ=env)
    assert settings.model.n_ctx == 2048 and isinstance(settings.model.n_ctx, int)
    assert settings.gpu.required is True
    assert settings.generation.temperature == 0.25
    assert settings.model.n_threads == 4  # untouched keys keep the file's value


def test_env_overrides_without_file_and_foreign_vars_ignored() -> None:
    env = {"LLM_MODEL__N_CTX": "2048", "LLM_API_TOKEN": "someone-elses", "LLM_DATA_DIR": "/tmp/d"}
    settings, _ = load_settings(environ=env)
    assert settings.model.n_ctx == 2048
    assert settings.data_dir == "/tmp/d"


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"LLM_MODEL__N_CTX": "lots"})
    assert "model.n_ctx" in info.value.message
    with pytest.raises(ConfigError, match="n_ctxx"):
        load_settings(environ={"LLM_MODEL__N_CTXX": "2048"})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("model:\n  n_ctx: 10\n", "model.n_ctx"),
        ("model:\n  n_gpu_layers: -2\n", "model.n_gpu_layers"),
        ("model:\n  n_batch: 0\n", "model.n_batch"),
        ("model:\n  cache_type_k: f8\n", "model.cache_type_k"),
        ("generation:\n  temperature: 9\n", "generation.temperature"),
        ("generation:\n  max_tokens: 0\n", "generation.max_tokens"),
        ("server:\n  port: 70000\n", "server.port"),
        ("backend:\n  kind: ollama\n", "backend.kind"),
    ],
)
def test_out_of_bounds_values_are_rejected(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert key in info.value.message and str(path) in info.value.message
    assert info.value.field == key


def test_bounds_are_inclusive(tmp_path: Path) -> None:
    settings, _ = load_settings(write(tmp_path, "model:\n  n_ctx: 256\n  n_gpu_layers: -1\n"), environ={})
    assert settings.model.n_ctx == 256


def test_gpu_required_refuses_cpu(tmp_path: Path, model_path: Path) -> None:
    from engine.gpu import cuda_build
    from engine.runtime import build_backend

    settings, _ = load_settings(
        environ={"LLM_GPU__REQUIRED": "true"}, overrides={"model": {"path": str(model_path)}}
    )
    if cuda_build() is False:  # this machine: a CPU-only build
        with pytest.raises(ModelUnavailable) as info:
            build_backend(settings)
        assert "GPU" in info.value.message and "CPU" in info.value.message
        assert "gpu.required" in info.value.message
    # n_gpu_layers: 0 means the CPU on any build
    settings.model.n_gpu_layers = 0
    with pytest.raises(ModelUnavailable) as info:
        build_backend(settings)
    assert "GPU" in info.value.message and "CPU" in info.value.message


def test_gpu_not_required_loads_on_cpu(model_path: Path) -> None:
    from engine.runtime import build_backend

    settings, _ = load_settings(environ={}, overrides={"model": {"path": str(model_path), "n_ctx": 256}})
    backend = build_backend(settings)
    try:
        assert backend.model_info()["name"] == model_path.name
    finally:
        backend.close()


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    from engine.runtime import build_backend

    settings, _ = load_settings(environ={}, overrides={"model": {"path": str(tmp_path / "absent.gguf")}})
    with pytest.raises(ModelUnavailable, match="absent.gguf"):
        build_backend(settings)
