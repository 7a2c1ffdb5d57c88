"""The JSON state file of a curriculum driver (``ssa_state.json`` / ``msa_state.json``), written atomically.

It holds the driver's options, one record per step (command, run folder, output folder, status, result), the
greedy-search states and the final result. A driver started again on the same work folder continues from it:
finished steps are taken from the record, unfinished ones are handed to the runner (which resumes them). A restart
with different options is refused unless ``force``; then the old steps move to ``superseded`` and every step is
re-derived (runs whose command and data are unchanged are still reused by the runner).
"""
from __future__ import annotations

import datetime
import json
import os
import threading
from typing import Any, Callable, Dict, Optional

from utils.io import write_json

STATE_VERSION = 1


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


class OptionsChangedError(SystemExit):
    """A resumed driver was given options other than the recorded ones (and no ``--force``)."""


class DriverState:
    """Load-or-create the state file at ``path`` for ``driver`` with ``options`` (a JSON-able dict). Steps may be
    recorded from several threads (candidates evaluated in parallel): every change and save holds a lock."""

    def __init__(self, path: str, driver: str, options: Dict[str, Any], force: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        options = json.loads(json.dumps(options))
        fresh = {"driver": driver, "version": STATE_VERSION, "options": options, "created": _now(),
                 "steps": {}, "searches": {}, "result": None, "superseded": []}
        if not os.path.isfile(path):
            self.data = fresh
            self.save()
            return
        with open(path) as fh:
            self.data = json.load(fh)
        if self.data.get("driver") != driver or self.data.get("version") != STATE_VERSION:
            raise SystemExit(f"{path}: a state file of driver {self.data.get('driver')!r} version "
                             f"{self.data.get('version')!r}, not {driver!r} version {STATE_VERSION}: "
                             "use another --work_dir")
        old = self.data["options"]
        if old != options:
            changed = sorted(k for k in set(old) | set(options) if old.get(k) != options.get(k))
            detail = "; ".join(f"{k}: recorded {old.get(k)!r}, now {options.get(k)!r}" for k in changed)
            if not force:
                raise OptionsChangedError(
                    f"{path} was written with other options ({detail}). Resume with the recorded options, use "
                    "another --work_dir, or pass --force to restart the steps with the new options (runs whose "
                    "command and data are unchanged are reused)")
            fresh["superseded"] = self.data.get("superseded", []) + [
                {k: self.data.get(k) for k in ("options", "steps", "searches", "result")}]
            fresh["created"] = self.data.get("created", fresh["created"])
            self.data = fresh
            print(f"[state] --force: options changed ({detail}); steps restart", flush=True)
        self.save()

    def save(self) -> None:
        with self._lock:
            self.data["updated"] = _now()
            write_json(self.path, self.data)

    def step(self, name: str) -> Optional[Dict[str, Any]]:
        return self.data["steps"].get(name)

    def done(self, name: str) -> Optional[Dict[str, Any]]:
        """The record of step ``name`` when it finished, else None."""
        record = self.step(name)
        return record if record is not None and record.get("status") == "done" else None

    def set_step(self, name: str, record: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            self.data["steps"][name] = record
            self.save()
        return record

    def run_step(self, name: str, planned: Dict[str, Any], run: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """Return the finished record of ``name``, or record ``planned`` (command, folders) as running, call
        ``run()`` (a runner call returning the run record) and record its outcome as done."""
        finished = self.done(name)
        if finished is not None:
            return finished
        self.set_step(name, {**planned, "status": "running", "started": _now()})
        outcome = run()
        return self.set_step(name, {**planned, **outcome, "status": "done", "finished": _now()})

    def search_state(self, name: str) -> Optional[Dict[str, Any]]:
        return self.data["searches"].get(name)

    def set_search_state(self, name: str, state: Dict[str, Any]) -> None:
        with self._lock:
            self.data["searches"][name] = state
            self.save()
