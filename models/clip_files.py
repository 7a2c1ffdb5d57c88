"""Reading CLIP weight files as data: nothing in a file is ever executed.

- ``.safetensors`` files: ``safetensors`` (a JSON header and raw tensor bytes);
- ``torch.save``d state dicts: ``torch.load(weights_only=True)``;
- OpenAI's TorchScript archives: the archive's ``data.pkl`` is unpickled by ``_ScriptArchiveUnpickler``, which
  knows exactly four kinds of globals: TorchScript classes (``__torch__.*``, turned into inert ``ScriptRecord``s that
  only hold their attributes), ``torch._utils._rebuild_tensor_v2`` (a strided view of a storage), the typed
  storage names (``torch.FloatStorage`` ...: a dtype) and ``collections.OrderedDict``. Storages are read from the
  archive's ``data/`` entries. ``torch.jit.load`` is never called, so the archive's ``code/`` is never run.

Every function returns ``{name: tensor}`` at the stored precision, or raises ``InputError`` naming the file.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import zipfile
from typing import Any, Dict, Mapping, Optional

import torch

from utils.errors import InputError
from utils.io import is_torchscript_archive, refused_global

_SCRIPT_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class ScriptRecord:
    """An inert stand-in for a TorchScript module object: it only keeps the attributes it was built with."""

    def __init__(self) -> None:
        self.attributes: Any = {}

    def __setstate__(self, state: Any) -> None:
        self.attributes = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *_unused: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` done on a flat storage tensor, as a copy."""
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


class _ScriptArchiveUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl`` into ``ScriptRecord``s and tensors; any other global is refused."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes, path: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return ScriptRecord
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _SCRIPT_STORAGE_DTYPES:
            return _SCRIPT_STORAGE_DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:60]}")
        dtype, key = pid[1], str(pid[2])
        raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype)


def _collect_tensors(node: Any, prefix: str, out: Dict[str, torch.Tensor]) -> None:
    attributes = node.attributes if isinstance(node, ScriptRecord) else None
    if not isinstance(attributes, Mapping):
        return
    for name, value in attributes.items():
        if torch.is_tensor(value):
            out[prefix + str(name)] = value
        elif isinstance(value, ScriptRecord):
            _collect_tensors(value, f"{prefix}{name}.", out)


def read_torchscript_tensors(path: str, what: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The tensors a TorchScript archive's module tree holds, by dotted attribute name, read as data."""
    what = what or path
    try:
        with zipfile.ZipFile(path) as archive:
            data_pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(data_pkl) != 1:
                raise InputError(f"{what}: a zip archive without one top-level data.pkl: not a TorchScript CLIP file")
            prefix = data_pkl[0].split("/")[0]
            root = _ScriptArchiveUnpickler(archive, prefix, archive.read(data_pkl[0]), path).load()
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, RuntimeError, TypeError,
            ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{what}: not readable as a TorchScript CLIP file without running it "
                         f"({type(exc).__name__}: {exc})") from exc
    out: Dict[str, torch.Tensor] = {}
    _collect_tensors(root, "", out)
    return out


def _read_torch_file(path: str, what: str) -> Dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or hostile files; report them all as bad input
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        blocked = refused_global(exc)
        if blocked:
            raise InputError(f"{what}: refused by the safe loader (weights_only=True): it holds a {blocked}, which "
                             "is not a tensor or a plain value, and CLIP weights must not need code to load") from exc
        raise InputError(f"{what}: not a CLIP weights file (neither safetensors, an OpenAI TorchScript "
                         f"file nor a torch state dict: {type(exc).__name__}: {first})") from exc
    if isinstance(obj, Mapping) and "model" in obj:
        raise InputError(f"{what}: this is a CLIP-VG checkpoint, not a CLIP file; pass it with --resume, --retrain "
                         "or --eval_model (a checkpoint that holds CLIP tensors provides CLIP itself)")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # open_clip training checkpoints wrap the weights
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise InputError(f"{what}: expected a CLIP state dict (name -> tensor), got {type(obj).__name__}")
    return {str(k)[len("module."):] if str(k).startswith("module.") else str(k): v for k, v in obj.items()}


def _is_safetensors(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors(path: str, what: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """All tensors of a safetensors file (a truncated or damaged file is an ``InputError``)."""
    what = what or path
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(path, device="cpu"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{what}: not a readable safetensors file, truncated or damaged? ({exc})") from exc


def safetensors_metadata(path: str) -> Dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (empty when it has none or is not one)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return {}
        size = int.from_bytes(head, "little")
        if size > os.path.getsize(path):
            return {}
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def read_weights_file(path: str, what: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The tensors of a CLIP weights file of any supported kind (see the module docstring), as data. Errors start
    with ``what`` (default: the path)."""
    what = what or path
    if not os.path.isfile(path):
        raise InputError(f"{what}: no such file")
    if path.endswith(".safetensors") or _is_safetensors(path):
        return read_safetensors(path, what)
    if is_torchscript_archive(path):
        return read_torchscript_tensors(path, what)
    return _read_torch_file(path, what)


def metadata_json(path: str, key: str) -> Optional[Any]:
    """A JSON value stored under ``key`` in a safetensors file's metadata, else None."""
    value = safetensors_metadata(path).get(key) if path.endswith(".safetensors") else None
    return json.loads(value) if value else None
