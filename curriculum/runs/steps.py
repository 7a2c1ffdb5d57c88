"""A driver's runs as recorded steps: every training and scoring run is a named step of the state file, launched by
the driver's launchers only when the state does not already hold it done (``DriverState.run_step``), and every
greedy search keeps its evaluations in the state, so a driver started again continues where it stopped.

``RecordedRuns`` holds what SSA and MSA share; each driver names its steps (``curriculum.ssa.SSARuns``,
``curriculum.msa.MSARuns``) and so implements ``curriculum.algorithm.Runs``.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from curriculum.reliability import load_reliabilities
from curriculum.runs.command_line import make_launchers, run_length
from curriculum.runs.state import DriverState
from curriculum.search import SearchResult, greedy_threshold_search


class RecordedRuns:
    """Training, scoring and searching for the driver ``driver`` ('ssa' / 'msa'), recorded in ``state``; runs go to
    ``{work}/runs/<step>/``."""

    def __init__(self, driver: str, args: argparse.Namespace, train_args: List[str], state: DriverState,
                 work: str, train_split: str) -> None:
        self.driver, self.args, self.state, self.train_split = driver, args, state, train_split
        self.train_launcher, self.candidate_launcher, self.score_launcher = make_launchers(args, train_args)
        options = state.data["options"]
        self.dataset, self.data_root, self.split_root = args.dataset, options["data_root"], options["split_root"]
        self.runs = os.path.join(work, "runs")

    def given_measurer(self, name: str, checkpoint: str, **info: Any) -> str:
        """Record the measurer checkpoint the user gave as step ``name``."""
        self.state.set_step(name, {"kind": "given", "status": "done", **info,
                                   "result": {"best_checkpoint": checkpoint}})
        return checkpoint

    def train_step(self, name: str, samples: List[Any], role: str, info: Dict[str, Any]) -> Dict[str, Any]:
        """The record of step ``name``: a training run of ``role`` (``command_line.RUN_ROLES``) on ``samples``."""
        run_dir = os.path.join(self.runs, name)
        epochs, steps = run_length(self.args, role, len(samples))
        launcher = self.candidate_launcher if role == "candidate" else self.train_launcher
        planned = {**info, "kind": "train", "run_dir": run_dir, "output_dir": os.path.join(run_dir, "output"),
                   "command": launcher.command(run_dir, self.dataset, self.data_root, epochs, steps)}
        return self.state.run_step(name, planned, lambda: launcher.run(
            run_dir, self.dataset, self.data_root, self.split_root, samples, epochs, self.train_split,
            tag=f"{self.driver} {name}", max_steps=steps))

    def score_command(self, run_dir: str, model: str) -> List[str]:
        """The command of a scoring run in ``run_dir`` with the measurer checkpoint ``model``."""
        return self.score_launcher.command(run_dir, model, self.dataset, self.data_root, self.train_split)

    def score_step(self, name: str, planned: Dict[str, Any], model: str, samples: List[Any]
                   ) -> Dict[str, Any]:
        """The record of step ``name`` (``planned`` names its ``run_dir``): ``samples`` scored by ``model``."""
        return self.state.run_step(name, planned, lambda: self.score_launcher.run(
            planned["run_dir"], model, self.dataset, self.data_root, self.split_root, samples, self.train_split,
            tag=f"{self.driver} {name}"))

    @staticmethod
    def reliabilities(record: Dict[str, Any], samples: List[Any]) -> np.ndarray:
        """The per-sample reliabilities a finished scoring step wrote."""
        return load_reliabilities(record["result"]["reliability_file"], samples)

    def candidate_step(self, name: str, samples: List[Any], info: Dict[str, Any]) -> Optional[float]:
        """The validation accuracy of candidate step ``name`` trained on ``samples``; None (recorded as skipped,
        not trained) when they are fewer than ``--min_samples``."""
        if len(samples) < self.args.min_samples:
            self.state.set_step(name, {**info, "status": "done",
                                       "skipped": f"{len(samples)} samples < --min_samples {self.args.min_samples}"})
            return None
        return self.train_step(name, samples, "candidate", info)["result"]["val_accu"]

    def search_step(self, key: str, evaluate: Callable[[float], Optional[float]]) -> SearchResult:
        """The greedy search of ``evaluate`` with the driver's ``--start``, ``--delta``, ``--min_gain`` and
        ``--parallel_candidates``, its evaluations kept in the state under ``key``."""
        return greedy_threshold_search(evaluate, self.args.start, self.args.delta,
                                       state=self.state.search_state(key),
                                       on_update=lambda s: self.state.set_search_state(key, s),
                                       parallel=self.args.parallel_candidates, min_gain=self.args.min_gain)
