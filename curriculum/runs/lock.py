"""One driver per work folder: a kernel lock (``fcntl.flock``) on ``{work_dir}/.driver.lock``.

The kernel releases the lock when its process ends, however it ends (kill -9 included), so a lock is never stale and
never taken twice. The file records the holder's pid and host, for the message a second driver gets; it is removed
when the holder lets go (a driver that opened the removed file sees that and locks the new one).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from typing import IO, Iterator

from utils.errors import InputError

LOCK_FILE = ".driver.lock"


def _holder(path: str) -> str:
    """The pid and host recorded in a held lock file, as words (empty while the holder is still writing them)."""
    try:
        with open(path) as fh:
            holder = json.load(fh)
        return f" (pid {holder['pid']} on host {holder['host']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _open_locked(path: str, work_dir: str) -> IO[str]:
    """The lock file at ``path``, opened and locked by this process; refused while another process holds it."""
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise InputError(f"{work_dir} is in use by another driver{_holder(path)}; wait for it, or use another "
                             "--work_dir") from None
        try:
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except FileNotFoundError:  # the previous holder removed the file after we opened it
            same = False
        if same:
            return fh
        fh.close()


def _make_work_dir(work_dir: str) -> None:
    """Create ``work_dir``; a one-line ``InputError`` when it is a file or cannot be written."""
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise InputError(f"--work_dir {work_dir}: is a file, not a folder")
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--work_dir {work_dir}: cannot create it ({exc.strerror})") from None
    if not os.access(work_dir, os.W_OK | os.X_OK):
        raise InputError(f"--work_dir {work_dir}: not writable")


@contextlib.contextmanager
def work_dir_lock(work_dir: str) -> Iterator[str]:
    """Create ``work_dir`` and hold its lock while a driver runs there; yields the lock file's path. Another driver
    holding it, or a ``work_dir`` that is a file or cannot be written, is a one-line ``InputError``."""
    _make_work_dir(work_dir)
    path = os.path.join(work_dir, LOCK_FILE)
    try:
        fh = _open_locked(path, work_dir)
    except PermissionError as exc:
        raise InputError(f"--work_dir {work_dir}: cannot write {LOCK_FILE} ({exc.strerror})") from None
    try:
        fh.truncate(0)
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, fh)
        fh.flush()
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):  # still locked: a driver that opened it sees it gone
            os.remove(path)
        fh.close()
