"""Launching training and scoring runs, resumably (the SSA / MSA drivers' only way to train): as subprocesses, or
with the launcher spec ``"inprocess"`` by calling the script's ``main(argv)`` inside this process
(``curriculum.runs.processes``).

A run lives in its own folder ``run_dir``:
- ``splits/{dataset}/``: the run's ``--split_root`` (its training or scored split written there, the dataset's
  other split files linked to the originals, see ``subset_files.prepare_split_root``);
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

import datetime
import hashlib
import os
import re
import shlex
import socket
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from curriculum.runs.cache import RunCache, file_fingerprint, samples_fingerprint, split_files_fingerprint
from curriculum.runs.outputs import RUN_RECORD, read_record, score_result, train_result
from curriculum.runs.processes import INPROCESS, call_main, launcher_prefix, log_tail, process_alive, spawn_streaming
from curriculum.subset_files import prepare_split_root
from datasets.cache import DataCache
from utils.errors import RunFailed
from utils.io import write_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TRAIN_SCRIPT = os.path.join(REPO_ROOT, "train_clip_vg.py")
DEFAULT_SCORE_SCRIPT = os.path.join(REPO_ROOT, "eval_for_reliability_distribution.py")
LAUNCH_LOG = "launch.log"
_PROGRESS = re.compile(r"^\| (epoch|resumed)")
ONE_PROCESS = "<one process>"
"""How a run cache identity writes a single-process launcher (in this process or a plain interpreter)."""


class RunFailedError(RunFailed):
    """A launched command failed or left no complete result (one line at the command line, exit status 1)."""


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _set_aside(run_dir: str, why: str) -> str:
    k = 1
    while os.path.exists(f"{run_dir}.stale-{k}"):
        k += 1
    target = f"{run_dir}.stale-{k}"
    os.replace(run_dir, target)
    print(f"[runner] {run_dir} {why}: moved to {target}", flush=True)
    return target


class _Launcher:
    """Shared launching, record and log handling of the training and scoring launchers."""

    default_script: str
    """The script a subclass launches when none is given."""

    def __init__(self, launcher: Union[str, Sequence[str], None] = None, script: Optional[str] = None,
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
        self.script = os.path.abspath(script or self.default_script)
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
        """The script's ``main(argv)`` in this process, in ``cwd``, with this launcher's ``data_cache``
        (``processes.call_main``)."""
        return call_main(self.script, argv, self.cwd, emit, self.data_cache)

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
        record = read_record(run_dir)
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


def _still_running(record: Dict[str, Any]) -> bool:
    """Whether the process of an interrupted attempt is still running (its command line names the run's output)."""
    return process_alive(record.get("pid"), record.get("host"), record["output_dir"])


class TrainLauncher(_Launcher):
    """Launches ``train_clip_vg.py`` (or a compatible script) on a given training sample list."""

    default_script = DEFAULT_TRAIN_SCRIPT

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

    default_script = DEFAULT_SCORE_SCRIPT

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
