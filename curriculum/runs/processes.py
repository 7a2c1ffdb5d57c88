"""Starting a run's command: as a subprocess streaming its output line by line, or, with the launcher spec
``"inprocess"``, by calling the script's ``main(argv)`` inside this process (no interpreter start-up and imports per
run; one process, so no multi-process launcher). Both report the exit status a process of its own would have."""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import traceback
from types import ModuleType
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

import torch

from datasets.cache import DataCache

INPROCESS = "inprocess"
"""The launcher spec that runs a script's ``main(argv)`` in this process instead of a subprocess."""
_TAIL_LINES = 25


def launcher_prefix(spec: Union[str, Sequence[str], None]) -> List[str]:
    """The launcher as an argv prefix: '' / None / 'python' -> this interpreter; 'torchrun --nproc_per_node=4'
    -> as split by the shell; a leading 'python'/'python3' token is replaced by ``sys.executable``; 'inprocess'
    -> ``['inprocess']`` (recorded in the command, run by calling the script's ``main``)."""
    tokens = shlex.split(spec) if isinstance(spec, str) else list(spec or [])
    if not tokens:
        return [sys.executable]
    if tokens[0] in ("python", "python3"):
        tokens[0] = sys.executable
    return tokens


def spawn_streaming(command: Sequence[str], cwd: str, env: Mapping[str, str], emit: Callable[[bytes], None],
                    on_start: Callable[[int], None] = lambda pid: None) -> int:
    """Run ``command`` as a subprocess in ``cwd``, with ``env`` added to this process's environment (and Python
    unbuffered), each line of its stdout and stderr to ``emit``; its exit status. The process is stopped if this one
    is interrupted."""
    proc = subprocess.Popen(list(command), cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        on_start(proc.pid)
        for raw in iter(proc.stdout.readline, b""):
            emit(raw)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def log_tail(path: str) -> str:
    """The last lines of a log (each progress-bar line reduced to its final state), for error messages."""
    with open(path, "rb") as fh:
        lines = fh.read().decode(errors="replace").splitlines()
    return "\n".join(line.split("\r")[-1] for line in lines[-_TAIL_LINES:])


class _LineTee(io.TextIOBase):
    """A text stream passing each complete line written to it (UTF-8, newline included) to ``emit``; closing it
    passes on an unfinished last line."""

    encoding = "utf-8"

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        super().__init__()
        self._emit = emit
        self._pending: List[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, rest = text.split("\n")
        for line in lines:
            self._emit(("".join(self._pending) + line + "\n").encode(errors="replace"))
            self._pending = []
        self._pending.append(rest)
        return len(text)

    def close(self) -> None:
        if not self.closed and "".join(self._pending):
            self._emit("".join(self._pending).encode(errors="replace"))
        self._pending = []
        super().close()


def _load_script(path: str) -> ModuleType:
    """The script at ``path`` as a module named after its file (imported once, then reused from ``sys.modules``)."""
    name = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    previous = sys.modules.get(name)
    if previous is not None and getattr(previous, "__file__", None) == path:
        return previous
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:  # no half-imported module left behind
        sys.modules.pop(name)
        if previous is not None:
            sys.modules[name] = previous
        raise
    return module


def _exit_status(code: Any) -> int:
    """The exit status of a process ending with ``SystemExit(code)`` (a message is printed to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def call_main(script: str, argv: List[str], cwd: str, emit: Callable[[bytes], None],
              data_cache: Optional[DataCache] = None) -> int:
    """Call ``main(argv)`` of the script at ``script`` in this process, in ``cwd``, its stdout and stderr going line by
    line to ``emit`` (a ``main`` that takes ``data_cache`` gets it: the data sets of every run share it); returns the
    exit status a process of its own would have (``SystemExit``'s code; 1 after printing the traceback of an
    exception). Streams, working folder and torch's thread count are restored afterwards."""
    threads = torch.get_num_threads()
    try:
        with contextlib.closing(_LineTee(emit)) as tee, contextlib.redirect_stdout(tee), \
                contextlib.redirect_stderr(tee), contextlib.chdir(cwd):
            try:
                main = _load_script(script).main
                shared = data_cache is not None and "data_cache" in inspect.signature(main).parameters
                main(argv, **({"data_cache": data_cache} if shared else {}))
            except SystemExit as exc:
                return _exit_status(exc.code)
            except Exception:
                traceback.print_exc()
                return 1
        return 0
    finally:
        torch.set_num_threads(threads)


def process_alive(pid: Optional[int], host: Optional[str], marker: Optional[str] = None) -> bool:
    """Whether process ``pid`` of ``host`` is alive (False for another host: it cannot be checked from here);
    with ``marker``, also that its command line contains it (where /proc shows command lines)."""
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = f"/proc/{pid}/cmdline"
    if marker is None or not os.path.exists(cmdline):
        return True
    with open(cmdline, "rb") as fh:
        return marker.encode() in fh.read()
