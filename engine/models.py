"""Model files: list the GGUF files in a folder with facts read from their headers, without loading them.

The header reader is our own, small and read-only: gguf-py's GGUFReader parses every tokenizer array
into numpy and takes seconds on a 100 MB file, while a header walk takes milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import InvalidInput, NotFound

# llama.cpp's llama_ftype: general.file_type -> the name people know it by.
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip
_FTYPE_GUESSED = 1024  # a flag llama.cpp adds when it guessed the type
_QUANT_IN_NAME = re.compile(r"(?i)(?<![A-Z0-9])(I?Q\d_[A-Z0-9_]*?|BF16|F16|F32)(?=[.-]|$)")
_LATER_SHARD = re.compile(r"-(\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)

# GGUF value types: type id -> struct format of a scalar; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class ModelFile(BaseModel):
    """One model file and what its header says. `error` is set, and the facts left None, when unreadable."""

    name: str
    path: Path
    size_bytes: int
    model_name: str | None = None
    architecture: str | None = None
    parameters: int | None = None  # counted from the tensor shapes
    size_label: str | None = None  # general.size_label, e.g. "135M", else derived from `parameters`
    quantization: str | None = None  # e.g. "Q4_1"
    context_length: int | None = None  # the context the model was trained for
    has_chat_template: bool = False
    error: str | None = None


class GgufError(ValueError):
    """The file is not a GGUF file we can read; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int  # gguf.GGMLQuantizationType's value
    offset: int  # from the start of the data section


@dataclass
class GgufHeader:
    version: int
    # scalars, strings and short numeric arrays (per-layer values); long arrays (the vocabulary) are skipped
    metadata: dict[str, Any] = field(default_factory=dict)
    tensor_count: int = 0
    parameters: int = 0
    tensors: list[TensorInfo] = field(default_factory=list)  # only when read with tensors=True


def list_models(models_dir: Path) -> list[ModelFile]:
    """Every *.gguf file in `models_dir` (not recursive; later shards of split models left out), by name.

    Never raises: a missing folder gives [], a broken file a ModelFile with `error`.
    """
    try:
        entries = sorted(Path(models_dir).iterdir(), key=lambda p: p.name.lower())
    except OSError:
        return []
    out = []
    for path in entries:
        if path.suffix.lower() != ".gguf" or path.is_dir():
            continue
        shard = _LATER_SHARD.search(path.name)
        if shard and int(shard.group(1)) > 1:
            continue
        out.append(describe_model(path))
    return out


def model_in_folder(models_dir: Path, path: str, *, project_root: Path | None = None) -> Path:
    """The file `path` names, which must lie in `models_dir` (what the API and the UI may load).

    A relative path is read from the models folder (a bare file name), or else from the project folder
    ("models/x.gguf"). The path is normalised (".." removed) before the check; a symlink that the user put
    in the models folder is followed, since they chose it. Raises InvalidInput naming the folder.
    """
    root = Path(os.path.abspath(models_dir))
    try:
        if "\x00" in path:
            raise ValueError("NUL byte")
        given = Path(path)
        tries = (
            [given]
            if given.is_absolute()
            else [root / given, *([project_root / given] if project_root else [])]
        )
        for candidate in tries:
            full = Path(os.path.abspath(candidate))
            if full.is_relative_to(root):
                return full
    except (OSError, ValueError):  # a NUL byte, a name too long
        pass
    raise InvalidInput(
        f"Only model files in the models folder ({root.name}/) can be loaded; put the file there.",
        field="path",
    )


def describe_model(path: Path) -> ModelFile:
    """One file's ModelFile. Never raises. Cached by (path, mtime, size, inode)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        return ModelFile(
            name=path.name, path=path, size_bytes=0, error=f"Cannot read the file: {_oserror(exc)}"
        )
    return _describe_cached(str(path), st.st_mtime_ns, st.st_size, st.st_ino).model_copy()


@functools.lru_cache(maxsize=256)
def _describe_cached(path_str: str, mtime_ns: int, size: int, inode: int) -> ModelFile:
    path = Path(path_str)
    base = ModelFile(name=path.name, path=path, size_bytes=size)
    try:
        header = read_gguf_header(path)
    except GgufError as exc:
        return base.model_copy(update={"error": str(exc)})
    except OSError as exc:
        return base.model_copy(update={"error": f"Cannot read the file: {_oserror(exc)}"})
    meta = header.metadata
    arch = _str(meta.get("general.architecture"))
    ctx = meta.get(f"{arch}.context_length") if arch else None
    return base.model_copy(
        update={
            "model_name": _str(meta.get("general.name")),
            "architecture": arch,
            "parameters": header.parameters or None,
            "size_label": _str(meta.get("general.size_label")) or _size_label(header.parameters),
            "quantization": _quantization(meta.get("general.file_type"), path.name),
            "context_length": ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else None,
            "has_chat_template": bool(meta.get("tokenizer.chat_template")),
        }
    )


def model_fingerprint(path: Path) -> dict[str, Any]:
    """{"file": name, "size": bytes, "sha256_1mib": hex sha256 of the first MiB}, for session records.

    Cached by (path, mtime, size, inode). Raises NotFound when the file cannot be read.
    """
    path = Path(path)
    try:
        st = path.stat()
        return dict(_fingerprint_cached(str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    except OSError as exc:
        raise NotFound(f"Model file {path.name} cannot be read: {_oserror(exc)}", field="model") from exc


@functools.lru_cache(maxsize=64)
def _fingerprint_cached(path_str: str, mtime_ns: int, size: int, inode: int) -> dict[str, Any]:
    with open(path_str, "rb") as f:
        digest = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"file": Path(path_str).name, "size": size, "sha256_1mib": digest}


def read_gguf_header(path: Path, *, tensors: bool = False) -> GgufHeader:
    """Read the GGUF header: metadata (long arrays skipped), the tensor count and total parameters, and
    with `tensors` each tensor's name, shape and type.

    Raises GgufError for a file that is not valid GGUF, OSError when it cannot be read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise GgufError("Not a GGUF model file (too short).")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _HeaderReader(buf, tensors).read()


_SHORT_ARRAY = 1024  # numeric arrays up to this long are kept (per-layer head counts); longer ones skipped


class _HeaderReader:
    def __init__(self, buf: mmap.mmap, tensors: bool = False) -> None:
        self.buf = buf
        self.pos = 0
        self.endian = "<"
        self.keep_tensors = tensors

    def read(self) -> GgufHeader:
        if self.buf[:4] != b"GGUF":
            raise GgufError("Not a GGUF model file (wrong magic bytes).")
        self.pos = 4
        version = self.unpack("I")
        if version > 0xFFFF:  # a big-endian file
            self.endian, self.pos = ">", 4
            version = self.unpack("I")
        if version not in (2, 3):
            raise GgufError(
                f"Unsupported GGUF version {version}: convert the model with a current llama.cpp."
            )
        try:
            header = GgufHeader(version=version, tensor_count=self.unpack("Q"))
            kv_count = self.unpack("Q")
            for _ in range(kv_count):
                key = self.string()
                value = self.value(self.unpack("I"))
                if value is not _SKIPPED:
                    header.metadata[key] = value
            for _ in range(header.tensor_count):
                if self.keep_tensors:
                    name = self.string()
                else:
                    self.skip_string()
                n_dims = self.unpack("I")
                if n_dims > 8:
                    raise GgufError("Corrupt GGUF model file (impossible tensor shape).")
                shape = struct.unpack_from(f"{self.endian}{n_dims}Q", self.buf, self.pos)
                count = 1
                for dim in shape:
                    count *= dim
                self.pos += 8 * n_dims
                ggml_type, offset = self.unpack("I"), self.unpack("Q")  # the type, then the data offset
                header.parameters += count
                if self.keep_tensors:
                    header.tensors.append(TensorInfo(name, tuple(shape), ggml_type, offset))
            if self.pos > len(self.buf):
                raise struct.error
        except (struct.error, UnicodeDecodeError) as exc:
            raise GgufError("Corrupt or truncated GGUF model file (the header ends early).") from exc
        return header

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise struct.error("string past the end")
        text = self.buf[self.pos : self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return text

    def skip_string(self) -> None:
        n = self.unpack("Q")
        self.pos += n
        if self.pos > len(self.buf):
            raise struct.error("string past the end")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise GgufError(f"Corrupt GGUF model file (unknown value type {vtype}).")
        elem, n = self.unpack("I"), self.unpack("Q")
        if elem in _SCALARS and n <= _SHORT_ARRAY:
            fmt = _SCALARS[elem]
            values = list(struct.unpack_from(f"{self.endian}{n}{fmt}", self.buf, self.pos))
            self.pos += n * struct.calcsize(fmt)
            return values
        if elem in _SCALARS:
            self.pos += n * struct.calcsize(_SCALARS[elem])
        elif elem == _STRING:
            for _ in range(n):  # each string costs >= 8 bytes, so a corrupt count hits the end quickly
                self.skip_string()
        else:
            raise GgufError("Corrupt GGUF model file (nested or unknown array type).")
        if self.pos > len(self.buf):
            raise struct.error("array past the end")
        return _SKIPPED


_SKIPPED = object()


def _str(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _quantization(file_type: Any, file_name: str) -> str | None:
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        name = _FILE_TYPES.get(file_type & ~_FTYPE_GUESSED)
        if name:
            return name
    return quantization_in_name(file_name)  # older files: trust the usual "model.Q4_K_M.gguf" naming


def quantization_in_name(file_name: str) -> str | None:
    """The quantisation a file name carries: "model.Q4_K_M.gguf", "model-IQ4_XS-00001-of-00002.gguf"."""
    match = _QUANT_IN_NAME.search(file_name)
    return match.group(1).upper() if match else None


def _size_label(parameters: int) -> str | None:
    if parameters <= 0:
        return None
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            value = parameters / scale
            return f"{value:.0f}{unit}" if value >= 10 else f"{value:.1f}{unit}"
    return str(parameters)


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc)
