"""Model files: listing a folder, reading GGUF headers without loading, fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import NotFound
from engine.models import GgufError, describe_model, list_models, model_fingerprint, read_gguf_header
from tests.helpers import require

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def model() -> Path:
    require(DEFAULT_MODEL.is_file(), f"default model missing: {DEFAULT_MODEL} (make setup installs it)")
    return DEFAULT_MODEL


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        dst.symlink_to(src)


# A tiny GGUF writer for edge cases: kv is [(key, type id, value)], tensors is [(name, dims)].
def _gguf(kv: list[tuple[str, int, Any]], tensors: list[tuple[str, list[int]]], endian: str = "<") -> bytes:
    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack(endian + "Q", len(raw)) + raw

    fmts = {4: "I", 6: "f", 7: "?", 10: "Q"}
    out = b"GGUF" + struct.pack(endian + "IQQ", 3, len(tensors), len(kv))
    for key, vtype, value in kv:
        out += s(key) + struct.pack(endian + "I", vtype)
        if vtype == 8:
            out += s(value)
        elif vtype == 9:  # an array of strings
            out += struct.pack(endian + "IQ", 8, len(value)) + b"".join(s(v) for v in value)
        else:
            out += struct.pack(endian + fmts[vtype], value)
    for name, dims in tensors:
        out += s(name) + struct.pack(f"{endian}I{len(dims)}QIQ", len(dims), *dims, 2, 0)
    return out + b"\0" * 32


def test_list_models_reads_headers_and_skips_other_files(model: Path, tmp_path: Path) -> None:
    _link(model, tmp_path / "b-linked.Q4_1.gguf")
    (tmp_path / "c-symlink.gguf").symlink_to(model)
    (tmp_path / "a-broken.gguf").write_bytes(os.urandom(4096))
    (tmp_path / "d-truncated.gguf").write_bytes(model.read_bytes()[:65536])
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "folder.gguf").mkdir()
    (tmp_path / "big-00002-of-00003.gguf").write_bytes(b"later shard")

    started = time.perf_counter()
    found = list_models(tmp_path)
    elapsed = time.perf_counter() - started

    assert [m.name for m in found] == [
        "a-broken.gguf",
        "b-linked.Q4_1.gguf",
        "c-symlink.gguf",
        "d-truncated.gguf",
    ]
    broken, linked, symlinked, truncated = found
    assert broken.error and "Not a GGUF" in broken.error and broken.architecture is None
    assert broken.size_bytes == 4096
    assert truncated.error and "truncated" in truncated.error
    for m in (linked, symlinked):
        assert m.error is None
        assert m.size_bytes == model.stat().st_size
        assert m.architecture == "llama"
        assert m.quantization == "Q4_1"
        assert m.context_length == 8192
        assert m.has_chat_template is True
        assert m.size_label == "135M"
        assert m.parameters is not None and 130_000_000 < m.parameters < 140_000_000
        assert m.model_name
    assert elapsed < 2.0, f"listing took {elapsed:.2f}s; it must not parse the tokenizer into memory"


def test_header_agrees_with_gguf_py(model: Path) -> None:
    from gguf import GGUFReader

    ours = read_gguf_header(model)
    theirs = GGUFReader(model)
    assert ours.tensor_count == len(theirs.tensors)
    assert ours.parameters == sum(int(t.n_elements) for t in theirs.tensors)
    for key in ("general.architecture", "general.name", "llama.context_length", "general.file_type"):
        assert ours.metadata[key] == theirs.fields[key].contents()


def test_missing_folder_lists_nothing(tmp_path: Path) -> None:
    assert list_models(tmp_path / "absent") == []


def test_big_endian_and_fallbacks(tmp_path: Path) -> None:
    kv = [
        ("general.architecture", 8, "qwen2"),
        ("qwen2.context_length", 4, 32768),
        ("general.file_type", 4, 15 | 1024),  # Q4_K_M, with llama.cpp's "guessed" flag
        ("tokenizer.ggml.tokens", 9, ["a", "b", "c"]),
        ("general.flag", 7, True),
    ]
    tensors = [("blk.0.w", [2048, 1024]), ("blk.0.b", [1024])]
    for endian in "<>":
        path = tmp_path / f"m{endian == '>'}.gguf"
        path.write_bytes(_gguf(kv, tensors, endian))
        m = describe_model(path)
        assert m.error is None
        assert (m.architecture, m.context_length, m.quantization) == ("qwen2", 32768, "Q4_K_M")
        assert m.parameters == 2048 * 1024 + 1024 and m.size_label == "2.1M"
        assert m.has_chat_template is False and m.model_name is None

    # No file_type in the header: the usual file name tag is used.
    path = tmp_path / "old-model.Q5_K_S.gguf"
    path.write_bytes(_gguf([("general.architecture", 8, "llama")], []))
    assert describe_model(path).quantization == "Q5_K_S"


def test_old_gguf_version_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\0" * 64)
    assert "version 1" in (describe_model(path).error or "")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert "Not a GGUF" in (describe_model(empty).error or "")


def test_fingerprint_is_stable_and_matches_the_first_mib(model: Path, tmp_path: Path) -> None:
    first = model_fingerprint(model)
    assert first == model_fingerprint(model)
    with open(model, "rb") as f:
        expected = hashlib.sha256(f.read(1 << 20)).hexdigest()
    assert first == {"file": model.name, "size": model.stat().st_size, "sha256_1mib": expected}
    link = tmp_path / "other-name.gguf"
    _link(model, link)
    assert model_fingerprint(link) == {**first, "file": "other-name.gguf"}


def test_fingerprint_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "small.gguf"
    path.write_bytes(b"one")
    before = model_fingerprint(path)
    path.write_bytes(b"two!")
    after = model_fingerprint(path)
    assert before["sha256_1mib"] != after["sha256_1mib"] and after["size"] == 4
    with pytest.raises(NotFound):
        model_fingerprint(tmp_path / "absent.gguf")


_SCRATCH = Path(tempfile.mkdtemp(prefix="gguf-fuzz-"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.sampled_from([b"", b"GGUF\x03\x00\x00\x00", b"GGUF\x00\x00\x00\x03"]))
def test_header_reader_never_raises_anything_but_gguf_error(body: bytes, prefix: bytes) -> None:
    path = _SCRATCH / "fuzz.gguf"
    path.write_bytes(prefix + body)
    with contextlib.suppress(GgufError):  # the only error it may raise
        read_gguf_header(path)
    model = describe_model(path)
    assert model.name == "fuzz.gguf"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_real_header_never_raises(data: st.DataObject) -> None:
    good = bytearray(_gguf([("general.architecture", 8, "llama"), ("t", 9, ["x", "y"])], [("w", [4, 4])]))
    for _ in range(data.draw(st.integers(1, 4))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(good)))
    path = _SCRATCH / "mutated.gguf"
    path.write_bytes(bytes(good[:cut]))
    with contextlib.suppress(GgufError):  # the only error it may raise
        read_gguf_header(path)


def teardown_module() -> None:
    shutil.rmtree(_SCRATCH, ignore_errors=True)
