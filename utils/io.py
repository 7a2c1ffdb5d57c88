"""Atomic file writers: every file is written to a temporary file in its own folder, flushed to disk, then moved
over the destination with ``os.replace``, so a reader (or a crash) never sees a half-written file."""
from __future__ import annotations

import json
import os
import tempfile
from typing import IO, Any, Callable, Iterable

import torch


def _atomic_write(path: str, mode: str, write: Callable[[IO[Any]], None]) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_bytes(path: str, data: bytes) -> str:
    """Atomically write ``data`` to ``path``; returns ``path``."""
    return _atomic_write(path, "wb", lambda fh: fh.write(data))


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
