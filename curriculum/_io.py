"""Private atomic file writers for the curriculum package (temp file in the same folder, then ``os.replace``).

``utils/io.py`` is planned to hold the project-wide versions; this module can forward to it once it exists.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO, Iterable

import torch


def _atomic(path: str, mode: str, write: Callable[[IO[Any]], None]) -> str:
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


def write_bytes(path: str, data: bytes) -> str:
    """Atomically write ``data`` to ``path``."""
    return _atomic(path, "wb", lambda fh: fh.write(data))


def write_text(path: str, text: str) -> str:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return _atomic(path, "w", lambda fh: fh.write(text))


def write_json(path: str, obj: Any) -> str:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str, rows: Iterable[Any]) -> str:
    """Atomically write one JSON object per line."""
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def torch_save(path: str, obj: Any) -> str:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    return _atomic(path, "wb", lambda fh: torch.save(obj, fh))
