"""Atomic file writers: every file is written to a temporary file in its own folder, flushed to disk, then moved
over the destination with ``os.replace``, so a reader (or a crash) never sees a half-written file.

``tempfile.mkstemp`` creates its file with mode 0600; before the move the file gets the mode a plain ``open()``
would have given a new file, ``0o666 & ~umask``, so other users and groups read the outputs as usual.

``torch_load_plain`` is the matching reader for files of plain data (split files): as safe as
``torch.load(weights_only=True)``, several times faster."""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile
from typing import IO, Any, Callable, Iterable

import torch


def current_umask() -> int:
    """The process umask, read from /proc where it is shown (no change to the process state), else by setting
    and restoring it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str, mode: str, write: Callable[[IO[Any]], None], durable: bool = True) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_bytes(path: str, data: bytes, durable: bool = True) -> str:
    """Atomically write ``data`` to ``path``; returns ``path``. ``durable=False`` skips the fsync (still atomic for
    readers; for many small files that can be regenerated, where one fsync each costs more than the write)."""
    return _atomic_write(path, "wb", lambda fh: fh.write(data), durable)


def atomic_write_text(path: str, text: str) -> str:
    """Atomically write ``text`` (UTF-8) to ``path``; returns ``path``."""
    return _atomic_write(path, "w", lambda fh: fh.write(text))


def atomic_torch_save(obj: Any, path: str) -> str:
    """Atomically ``torch.save(obj)`` to ``path`` (argument order as ``torch.save``); returns ``path``."""
    return _atomic_write(path, "wb", lambda fh: torch.save(obj, fh))


def write_json(path: str, obj: Any) -> str:
    """Atomically write ``obj`` as indented JSON; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: str, rows: Iterable[Any]) -> str:
    """Atomically write one JSON object per line; returns ``path``."""
    return atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


class _PlainDataUnpickler(pickle.Unpickler):
    """The C unpickler with no globals and no tensors: it can only rebuild plain Python data (lists, tuples, dicts,
    strings, numbers), so it is as safe as ``weights_only=True`` and several times faster on large sample lists."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("tensor storages are not plain data")


def torch_load_plain(path: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` for files that hold plain Python data (split
    files: lists of tuples of strings and numbers), read by ``_PlainDataUnpickler``; a file that holds anything else
    (tensors, allowed classes) or is not in torch's zip format is read by ``torch.load`` itself, so the result and
    the errors are those of the safe loader."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) == 1:
                return _PlainDataUnpickler(io.BytesIO(archive.read(pickles[0]))).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError):
        pass
    return torch.load(path, map_location="cpu", weights_only=True)
