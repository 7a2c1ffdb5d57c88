"""Atomic file writers: every file is written to a temporary file in its own folder, flushed to disk, then moved
over the destination with ``os.replace``, so a reader (or a crash) never sees a half-written file.

``tempfile.mkstemp`` creates its file with mode 0600; before the move the file gets the mode a plain ``open()``
would have given a new file, ``0o666 & ~umask``, so other users and groups read the outputs as usual.

A full disk while writing (``ENOSPC``, ``EDQUOT``) raises ``RunFailed`` with one line naming the file; Ctrl-C raises
``KeyboardInterrupt`` whose message names the file. Either way the temporary file is removed and the destination is
unchanged. A process killed outright leaves its temporary file behind: ``remove_stale_temporaries`` clears those of
a folder's own files when a run starts again there.

``check_writable_dir`` / ``check_writable_file`` prove an output can be written before any work is done
(``InputError`` naming the flag and the real path).

``torch_load_plain`` is the matching reader for files of plain data (split files): as safe as
``torch.load(weights_only=True)``, several times faster."""
from __future__ import annotations

import errno
import glob
import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from typing import IO, Any, Callable, Iterable, List, Sequence

import torch

from utils.errors import InputError, RunFailed

WRITE_TEST_PREFIX = ".write-test-"
"""Prefix of the empty probe files ``check_writable_dir`` creates and removes."""
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


def temporary_pattern(path: str) -> str:
    """The glob of the temporary files ``_atomic_write`` uses for ``path`` (``.NAME.*.tmp`` in its folder)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")


def _atomic_write(path: str, mode: str, write: Callable[[IO[Any]], None], durable: bool = True) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise RunFailed(f"{path}: not written: {exc.strerror} in {folder}") from exc
        raise
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        kept = "the previous file is unchanged" if os.path.exists(path) else "nothing was written"
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise RunFailed(f"{path}: not written: {exc.strerror} in {folder} ({kept}; free space, then run "
                            "again)") from exc
        if isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted while writing {path} ({kept})") from exc
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


def remove_stale_temporaries(folder: str, names: Sequence[str]) -> List[str]:
    """Delete what interrupted writes left in ``folder``: the temporary files of ``names`` (files of the folder
    written with the atomic writers) and ``check_writable_dir``'s probes; returns the removed paths."""
    patterns = [temporary_pattern(os.path.join(folder, name)) for name in names]
    patterns.append(os.path.join(glob.escape(os.path.abspath(folder)), glob.escape(WRITE_TEST_PREFIX) + "*"))
    removed = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                os.remove(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def _probe_folder(folder: str) -> None:
    """Create ``folder`` if needed and write (then remove) a probe file in it; ``OSError`` when that fails."""
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=WRITE_TEST_PREFIX, dir=folder)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.remove(probe)


def check_writable_dir(folder: str, flag: str) -> str:
    """Create ``folder`` if needed and prove a file can be written in it (a probe file, always removed);
    ``InputError`` naming ``flag`` and the folder otherwise. Returns the absolute folder."""
    try:
        _probe_folder(folder)
    except OSError as exc:
        raise InputError(f"{flag} {folder}: cannot write there ({exc.strerror or exc})") from None
    return os.path.abspath(folder)


def check_writable_file(path: str, flag: str) -> str:
    """Prove the output file ``path`` can be written (atomically, as every writer here does) before any work:
    ``InputError`` naming ``flag`` and ``path`` when it is a folder or its folder cannot be created or written.
    Creates the folder; returns ``path``."""
    if os.path.isdir(path):
        raise InputError(f"{flag} {path}: is a folder; give the path of a file to write")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        _probe_folder(folder)
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot write it in {folder} ({exc.strerror or exc})") from None
    return path


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


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl``); read as a zip, nothing run."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def refused_global(exc: BaseException) -> str | None:
    """The global that ``torch.load(weights_only=True)`` refused to load, named in its error, or None when ``exc``
    is no such refusal."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return found.group(1) if found else None
