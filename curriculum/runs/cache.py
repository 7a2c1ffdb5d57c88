"""The run cache shared by drivers (``--run_cache``): a run identical to one finished before (same command apart from
its folder, same data) is found instead of trained again. Identities are SHA-1 fingerprints of the data a run reads."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from typing import Any, Dict, Optional, Sequence

from curriculum.runs.outputs import read_record
from utils.io import write_json

RUN_CACHE_INDEX = "run_index.json"


def samples_fingerprint(samples: Sequence[Any]) -> str:
    """SHA-1 of a sample list (its JSON form): identifies the data a run was given."""
    blob = json.dumps(list(samples), default=str, separators=(",", ":"), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def file_fingerprint(path: str) -> str:
    """SHA-1 of a file's bytes (e.g. a measurer checkpoint)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha1").hexdigest()


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
        record = read_record(run_dir) if run_dir else None
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
