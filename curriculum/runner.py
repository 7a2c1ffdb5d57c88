"""Launching training and scoring runs, resumably (the SSA / MSA drivers' only way to train): as subprocesses, or
with the launcher spec ``"inprocess"`` by calling the script's ``main(argv)`` inside this process (no interpreter
start-up and imports per run; one process, so no multi-process launcher).

A run lives in its own folder ``run_dir``:
- ``splits/{dataset}/``: the run's ``--split_root`` (its training or scored split written there, the dataset's
  other split files linked to the originals, see ``selection.prepare_split_root``);
- ``output/``: the script's ``--output_dir``;
- ``launch.log``: everything the command printed (every attempt, appended);
- ``run.json``: the record: command, data fingerprint, status (running / done), attempts, result.

``run`` never repeats finished work: a folder whose record says done (same command and data) is reused as is; a run
whose record says running (the driver was killed) but whose output is complete is adopted; one whose process is
still alive (pid and host in the record) is refused; otherwise the command is launched again, and training picks up
its own last checkpoint through ``--resume auto``. A folder holding a different command or data, or files without a
record, is moved aside to ``run_dir.stale-N``, never deleted.
With a ``run_cache`` folder shared by several launchers (the drivers' ``--run_cache``), a run identical to one
already finished elsewhere (same command apart from its folder and from a single-process launcher's kind, in this
process or a fresh interpreter; same training or scored samples, same other split files, same measurer) is not run
again: its record is returned with ``reused_from`` naming the folder that holds it.
A launcher's ``env`` adds environment variables to the processes it launches (e.g. ``OMP_NUM_THREADS`` for runs
side by side); they are not part of a run's identity.
A failing command raises ``RunFailedError`` naming the log and quoting its last lines; in-process, an exception
or a non-zero ``SystemExit`` of the script counts as failing, as it would in a process of its own.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import importlib.util
import inspect
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import traceback
from types import ModuleType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

from curriculum.selection import prepare_split_root
from datasets.cache import DataCache
from utils.io import write_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRAIN_SCRIPT = os.path.join(REPO_ROOT, "train_clip_vg.py")
DEFAULT_SCORE_SCRIPT = os.path.join(REPO_ROOT, "eval_for_reliability_distribution.py")
RUN_RECORD = "run.json"
RUN_CACHE_INDEX = "run_index.json"
LAUNCH_LOG = "launch.log"
_PROGRESS = re.compile(r"^\| (epoch|resumed)")
_TAIL_LINES = 25
INPROCESS = "inprocess"
"""The launcher spec that runs a script's ``main(argv)`` in this process instead of a subprocess."""
ONE_PROCESS = "<one process>"
"""How a run cache identity writes a single-process launcher (in this process or a plain interpreter)."""


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


class RunFailedError(RuntimeError):
    """A launched command failed or left no complete result."""


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


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def samples_fingerprint(samples: Sequence[Any]) -> str:
    """SHA-1 of a sample list (its JSON form): identifies the data a run was given."""
    blob = json.dumps(list(samples), default=str, separators=(",", ":"), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def file_fingerprint(path: str) -> str:
    """SHA-1 of a file's bytes (e.g. a measurer checkpoint)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_epoch_log(log_txt: str) -> List[Dict[str, Any]]:
    """The per-epoch JSON objects of a training ``log.txt`` (the arguments line and any torn line skipped)."""
    rows = []
    with open(log_txt) as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "epoch" in row:
                rows.append(row)
    return rows


def train_result(output_dir: str, epochs: int) -> Optional[Dict[str, Any]]:
    """The result of a finished training run (best ``val_accu`` over the logged epochs), or None while the log
    does not reach the final epoch ``epochs - 1`` or the best checkpoint is missing."""
    log_txt = os.path.join(output_dir, "log.txt")
    best_ckpt = os.path.join(output_dir, "best_checkpoint.pth")
    if not os.path.isfile(log_txt) or not os.path.isfile(best_ckpt):
        return None
    rows = read_epoch_log(log_txt)
    if not rows or max(int(r["epoch"]) for r in rows) < epochs - 1:
        return None
    best = max(rows, key=lambda r: float(r["val_accu"]))
    return {"val_accu": float(best["val_accu"]), "val_miou": best.get("val_miou"), "best_epoch": int(best["epoch"]),
            "epochs": epochs, "epochs_logged": len(rows), "best_checkpoint": best_ckpt,
            "checkpoint": os.path.join(output_dir, "checkpoint.pth"), "log_txt": log_txt}


def score_result(output_dir: str, dataset: str, split: str) -> Optional[Dict[str, Any]]:
    """The result of a finished scoring run (the summary is written last), or None."""
    stem = os.path.join(output_dir, f"{dataset}_{split}_reliability")
    jsonl, summary_path = f"{stem}.jsonl", f"{stem}_summary.json"
    if not os.path.isfile(jsonl) or not os.path.isfile(summary_path):
        return None
    with open(summary_path) as fh:
        summary = json.load(fh)
    keep = ("n", "mean", "quantiles", "share_above_0_5", "share_at_least_0_5", "count_zero", "count_one",
            "histogram_json", "histogram_png")
    return {"reliability_file": jsonl, "summary_file": summary_path, **{k: summary.get(k) for k in keep}}


def _read_record(run_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(run_dir, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _set_aside(run_dir: str, why: str) -> str:
    k = 1
    while os.path.exists(f"{run_dir}.stale-{k}"):
        k += 1
    target = f"{run_dir}.stale-{k}"
    os.replace(run_dir, target)
    print(f"[runner] {run_dir} {why}: moved to {target}", flush=True)
    return target


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


def split_files_fingerprint(split_root: str, dataset: str, exclude: str) -> str:
    """SHA-1 over the contents of ``{split_root}/{dataset}/{dataset}_*.pth`` except split ``exclude`` (what a run
    links from ``split_root`` besides its own data: validation and test splits)."""
    folder = os.path.join(split_root, dataset)
    digest = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        if name.startswith(f"{dataset}_") and name.endswith(".pth") and name != f"{dataset}_{exclude}.pth":
            digest.update(f"{name}:{file_fingerprint(os.path.join(folder, name))};".encode())
    return digest.hexdigest()


class RunCache:
    """An index ``{folder}/run_index.json`` from a run's identity (its command with its own folder left out, and its
    data fingerprint) to the folder of a finished run with that identity."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self.index_path = os.path.join(self.folder, RUN_CACHE_INDEX)

    @staticmethod
    def key(run_dir: str, command: Sequence[str], fingerprint: str) -> str:
        """The identity of a run: SHA-1 of its command (``run_dir`` replaced by a placeholder) and fingerprint."""
        generic = [arg.replace(run_dir, "<run_dir>") for arg in command]
        return hashlib.sha1(json.dumps([generic, fingerprint]).encode()).hexdigest()

    def _index(self) -> Dict[str, str]:
        if not os.path.isfile(self.index_path):
            return {}
        with open(self.index_path) as fh:
            return json.load(fh)

    def lookup(self, key: str) -> Optional[Dict[str, Any]]:
        """The record of a finished run with identity ``key`` whose output still exists, or None."""
        run_dir = self._index().get(key)
        record = _read_record(run_dir) if run_dir else None
        if record is None or record.get("status") != "done" or not os.path.isdir(record.get("output_dir", "")):
            return None
        return record

    def add(self, key: str, run_dir: str) -> None:
        """Remember that ``run_dir`` holds the finished run ``key``. Drivers side by side share the index: the read
        and rewrite happen under an exclusive lock on ``run_index.json.lock``, so no entry is lost."""
        os.makedirs(self.folder, exist_ok=True)
        with open(self.index_path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._index()
            if index.get(key) != run_dir:
                write_json(self.index_path, {**index, key: run_dir})


class _Launcher:
    """Shared launching, record and log handling of the training and scoring launchers."""

    def __init__(self, script: str, launcher: Union[str, Sequence[str], None] = None,
                 common_args: Sequence[str] = (), cwd: str = REPO_ROOT, echo: str = "progress",
                 run_cache: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                 data_cache: Optional[DataCache] = None) -> None:
        if echo not in ("progress", "all", "none"):
            raise ValueError(f"echo={echo!r}: expected 'progress', 'all' or 'none'")
        self.prefix = launcher_prefix(launcher)
        if env and self.prefix == [INPROCESS]:
            raise ValueError("env: environment variables apply to launched processes, not to the 'inprocess' "
                             "launcher")
        self.env = dict(env or {})
        self.script = os.path.abspath(script)
        if not os.path.isfile(self.script):
            raise FileNotFoundError(f"script {self.script}: no such file")
        self.common_args = [str(a) for a in common_args]
        self.cwd = cwd
        self.echo = echo
        self.run_cache = RunCache(run_cache) if run_cache else None
        # 'inprocess': the runs' data sets share this (a script's main that takes ``data_cache`` gets it)
        self.data_cache = data_cache if data_cache is not None else DataCache()

    def _attempt(self, command: List[str], log_path: str, tag: str, attempt: int,
                 on_start: Callable[[int], None]) -> int:
        """Run ``command`` once: a header line, then everything it prints, appended to ``log_path``; its progress
        lines (every line with ``echo='all'``) echoed to the console. Returns its exit status."""
        console = sys.stdout

        def emit(raw: bytes) -> None:
            log.write(raw)
            log.flush()
            line = raw.decode(errors="replace").rstrip("\n").split("\r")[-1]
            if self.echo == "all" or (self.echo == "progress" and _PROGRESS.match(line)):
                print(f"[{tag}] {line}", file=console, flush=True)

        with open(log_path, "ab") as log:
            emit(f"=== {_now()} attempt {attempt}: {shlex.join(command)}\n".encode())
            if self.prefix == [INPROCESS]:
                on_start(os.getpid())
                return self._call_main(command[len(self.prefix) + 1:], emit)
            return self._spawn(command, emit, on_start)

    def _spawn(self, command: List[str], emit: Callable[[bytes], None], on_start: Callable[[int], None]) -> int:
        """Run ``command`` as a subprocess in ``cwd`` with this launcher's ``env`` (``spawn_streaming``)."""
        return spawn_streaming(command, self.cwd, self.env, emit, on_start)

    def _call_main(self, argv: List[str], emit: Callable[[bytes], None]) -> int:
        """Call the script's ``main(argv)`` in this process, in ``cwd``, its stdout and stderr going line by line to
        ``emit``; returns the exit status a process of its own would have (``SystemExit``'s code; 1 after printing
        the traceback of an exception). Streams, working folder and torch's thread count are restored afterwards."""
        threads = torch.get_num_threads()
        try:
            with contextlib.closing(_LineTee(emit)) as tee, contextlib.redirect_stdout(tee), \
                    contextlib.redirect_stderr(tee), contextlib.chdir(self.cwd):
                try:
                    main = _load_script(self.script).main
                    shared = "data_cache" in inspect.signature(main).parameters
                    main(argv, **({"data_cache": self.data_cache} if shared else {}))
                except SystemExit as exc:
                    return _exit_status(exc.code)
                except Exception:
                    traceback.print_exc()
                    return 1
            return 0
        finally:
            torch.set_num_threads(threads)

    def _context(self, fingerprint: str, split_root: str, dataset: str, own_split: str) -> Optional[str]:
        """With a run cache: ``fingerprint`` combined with the contents of the split files the run links."""
        if self.run_cache is None:
            return None
        return hashlib.sha1(f"{fingerprint}:{split_files_fingerprint(split_root, dataset, own_split)}".encode()
                            ).hexdigest()

    def _identity(self, command: List[str]) -> List[str]:
        """``command`` as part of a run's identity: one process, in this one ('inprocess') or a fresh interpreter,
        computes the same run, so both launchers are written as one token; any other launcher (e.g. torchrun with
        several processes) stays as it is."""
        if self.prefix in ([INPROCESS], [sys.executable]):
            return [ONE_PROCESS, *command[len(self.prefix):]]
        return command

    def _execute(self, run_dir: str, command: List[str], fingerprint: str, tag: str,
                 prepare: Callable[[], Any], collect: Callable[[], Optional[Dict[str, Any]]],
                 cache_fingerprint: Optional[str] = None) -> Dict[str, Any]:
        """Run ``command`` in ``run_dir`` unless finished there (or, with a run cache, elsewhere); ``fingerprint``
        identifies the run's data, ``cache_fingerprint`` (given with a run cache, see ``_context``) everything it
        reads."""
        key = (RunCache.key(run_dir, self._identity(command), cache_fingerprint) if cache_fingerprint is not None
               else None)
        record = self._execute_here(run_dir, command, fingerprint, tag, prepare, collect, key)
        if key is not None and not record.get("reused_from"):
            self.run_cache.add(key, record["run_dir"])
        return record

    def _execute_here(self, run_dir: str, command: List[str], fingerprint: str, tag: str,
                      prepare: Callable[[], Any], collect: Callable[[], Optional[Dict[str, Any]]],
                      key: Optional[str]) -> Dict[str, Any]:
        record = _read_record(run_dir)
        if record is not None and (record.get("command") != command or record.get("fingerprint") != fingerprint):
            _set_aside(run_dir, "holds a run of another command or other data")
            record = None
        elif record is None and os.path.isdir(run_dir) and os.listdir(run_dir):
            _set_aside(run_dir, "holds files without a run record")
        if record is not None and record.get("status") == "done":
            return {**record, "reused": True}
        cached = self.run_cache.lookup(key) if key else None
        if cached is not None and record is None:
            print(f"[{tag}] identical to the finished run in {cached['run_dir']}: reused", flush=True)
            return {**cached, "reused": True, "reused_from": cached["run_dir"]}
        record_path = os.path.join(run_dir, RUN_RECORD)
        if record is not None:
            result = collect()
            if result is not None:
                record.update(status="done", result=result, finished=_now())
                write_json(record_path, record)
                return {**record, "reused": True}
            if _still_running(record):
                raise RunFailedError(f"{tag}: the earlier attempt (pid {record['pid']} on {record['host']}) is still "
                                     f"running in {run_dir}; wait for it to end or stop it, then start again")
        os.makedirs(run_dir, exist_ok=True)
        prepare()
        log_path = os.path.join(run_dir, LAUNCH_LOG)
        attempts = (record or {}).get("attempts", 0) + 1
        record = {"tag": tag, "command": command, "fingerprint": fingerprint, "run_dir": run_dir,
                  "output_dir": os.path.join(run_dir, "output"), "log": log_path, "status": "running",
                  "attempts": attempts, "started": (record or {}).get("started", _now())}
        write_json(record_path, record)
        print(f"[{tag}] {'resuming' if attempts > 1 else 'starting'} (log: {log_path})", flush=True)

        def started(pid: int) -> None:
            record.update(pid=pid, host=socket.gethostname())
            write_json(record_path, record)

        rc = self._attempt(command, log_path, tag, attempts, started)
        if rc != 0:
            raise RunFailedError(f"{tag}: command failed with exit code {rc}; full log: {log_path}\n"
                                 f"--- last lines ---\n{log_tail(log_path)}")
        result = collect()
        if result is None:
            raise RunFailedError(f"{tag}: command exited 0 but {record['output_dir']} holds no complete result; "
                                 f"full log: {log_path}\n--- last lines ---\n{log_tail(log_path)}")
        record.update(status="done", result=result, finished=_now())
        write_json(record_path, record)
        return {**record, "reused": False}


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


def _still_running(record: Dict[str, Any]) -> bool:
    """Whether the process of an interrupted attempt is still running (its command line names the run's output)."""
    return process_alive(record.get("pid"), record.get("host"), record["output_dir"])


class TrainLauncher(_Launcher):
    """Launches ``train_clip_vg.py`` (or a compatible script) on a given training sample list."""

    def __init__(self, launcher: Union[str, Sequence[str], None] = None, script: str = DEFAULT_TRAIN_SCRIPT,
                 common_args: Sequence[str] = (), cwd: str = REPO_ROOT, echo: str = "progress",
                 run_cache: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                 data_cache: Optional[DataCache] = None) -> None:
        super().__init__(script, launcher, common_args, cwd, echo, run_cache, env, data_cache)

    def command(self, run_dir: str, dataset: str, data_root: str, epochs: int,
                max_steps: Optional[int] = None) -> List[str]:
        """The command of a training run in ``run_dir`` (``--resume auto`` continues an interrupted attempt);
        ``max_steps``: the training script's ``--max_steps`` (exactly that many optimizer steps)."""
        run_dir = os.path.abspath(run_dir)
        steps = ["--max_steps", str(int(max_steps))] if max_steps else []
        return [*self.prefix, self.script, *self.common_args, "--dataset", dataset, "--data_root", data_root,
                "--split_root", os.path.join(run_dir, "splits"), "--output_dir", os.path.join(run_dir, "output"),
                "--epochs", str(int(epochs)), *steps, "--resume", "auto"]

    def run(self, run_dir: str, dataset: str, data_root: str, split_root: str, train_samples: Sequence[Any],
            epochs: int, train_split: str = "train_pseudo", tag: Optional[str] = None,
            max_steps: Optional[int] = None) -> Dict[str, Any]:
        """Train on ``train_samples`` (written as ``{dataset}_{train_split}.pth``; the other splits, validation
        included, come from ``split_root``) for ``epochs`` epochs (at most ``max_steps`` optimizer steps); returns
        the run record, whose ``result`` holds ``val_accu`` (best over epochs), ``best_epoch`` and
        ``best_checkpoint``."""
        run_dir = os.path.abspath(run_dir)
        output_dir = os.path.join(run_dir, "output")
        fingerprint = samples_fingerprint(train_samples)
        return self._execute(
            run_dir, self.command(run_dir, dataset, data_root, epochs, max_steps), fingerprint,
            tag or os.path.basename(run_dir),
            prepare=lambda: prepare_split_root(os.path.join(run_dir, "splits"), dataset, split_root, train_split,
                                               train_samples),
            collect=lambda: train_result(output_dir, epochs),
            cache_fingerprint=self._context(fingerprint, split_root, dataset, train_split))


class ScoreLauncher(_Launcher):
    """Launches ``eval_for_reliability_distribution.py`` (or a compatible script) to score a sample list."""

    def __init__(self, launcher: Union[str, Sequence[str], None] = None, script: str = DEFAULT_SCORE_SCRIPT,
                 common_args: Sequence[str] = (), cwd: str = REPO_ROOT, echo: str = "progress",
                 run_cache: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                 data_cache: Optional[DataCache] = None) -> None:
        super().__init__(script, launcher, common_args, cwd, echo, run_cache, env, data_cache)

    def command(self, run_dir: str, eval_model: str, dataset: str, data_root: str,
                eval_set: str = "train_pseudo") -> List[str]:
        """The command of a scoring run in ``run_dir``."""
        run_dir = os.path.abspath(run_dir)
        return [*self.prefix, self.script, *self.common_args, "--eval_model", os.path.abspath(eval_model),
                "--dataset", dataset, "--eval_set", eval_set, "--data_root", data_root,
                "--split_root", os.path.join(run_dir, "splits"), "--output_dir", os.path.join(run_dir, "output")]

    def run(self, run_dir: str, eval_model: str, dataset: str, data_root: str, split_root: str,
            samples: Sequence[Any], eval_set: str = "train_pseudo", tag: Optional[str] = None) -> Dict[str, Any]:
        """Score ``samples`` (written as ``{dataset}_{eval_set}.pth``) with the measurer ``eval_model``; the run
        record's ``result`` names the per-sample ``reliability_file`` and carries the summary statistics."""
        if not os.path.isfile(eval_model):
            raise FileNotFoundError(f"measurer checkpoint {eval_model}: no such file")
        run_dir = os.path.abspath(run_dir)
        output_dir = os.path.join(run_dir, "output")
        fingerprint = hashlib.sha1(
            f"{samples_fingerprint(samples)}:{file_fingerprint(eval_model)}".encode()).hexdigest()
        return self._execute(
            run_dir, self.command(run_dir, eval_model, dataset, data_root, eval_set), fingerprint,
            tag or os.path.basename(run_dir),
            prepare=lambda: prepare_split_root(os.path.join(run_dir, "splits"), dataset, split_root, eval_set,
                                               samples),
            collect=lambda: score_result(output_dir, dataset, eval_set),
            cache_fingerprint=self._context(fingerprint, split_root, dataset, eval_set))
