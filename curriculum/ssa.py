"""Single-source self-paced adapting (SSA, docs/curriculum.md), automated and resumable.

    python -m curriculum.ssa --dataset D --data_root R --split_root S --work_dir W \\
        [--source_split train_pseudo] [--measurer CKPT] [--delta 0.1] [--launcher "torchrun --nproc_per_node=4"] \\
        [--candidate_epochs N] [--final_epochs M] -- <training arguments, e.g. --batch_size 64 --lr 0.00025 ...>

The algorithm is ``curriculum.algorithm.ssa``; this driver runs it with every step recorded:

1. measurer: train on every sample of ``{S}/{D}/{D}_{source_split}.pth`` (skipped with ``--measurer``);
2. scoring: the reliability of every source sample under the measurer (``eval_for_reliability_distribution.py``);
3. greedy search over h (``curriculum.search``): each candidate trains on percent(H, h) and is judged by its best
   validation accuracy;
4. final model at h*: the best candidate itself when ``--candidate_epochs`` equals ``--final_epochs`` (and, under
   ``--update_budget``, ``--candidate_budget`` the update budget), else one more run of ``--final_epochs`` (or
   ``--update_budget`` steps) on percent(H, h*).

Outputs in W: ``ssa_state.json`` (every step's command, folders and result; written after each step),
``runs/<step>/`` (one folder per run), ``selected/`` (a ready ``--split_root`` whose training split is
percent(H, h*)), ``ssa_result.json`` and ``ssa_candidates.md`` / ``.json`` (every candidate). Killed at any point,
the same command resumes without redoing finished runs; different options are refused unless ``--force``.
With ``--sup_type full`` among the training arguments the training split is ``train`` instead of ``train_pseudo``.
Every source sample must be one training can use (``datasets.check`` lists the others): the driver refuses the
source before its first run otherwise, rather than train a measurer whose scoring would refuse it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from curriculum import algorithm
from curriculum.algorithm import Candidate
from curriculum.report import final_line, final_summary, fmt, markdown_table
from curriculum.runs.command_line import (add_common_arguments, common_options, final_is_best_candidate, load_source,
                                          skips_final, split_argv, train_split_of, validate_common)
from curriculum.runs.lock import work_dir_lock
from curriculum.runs.state import DriverState
from curriculum.runs.steps import RecordedRuns
from curriculum.search import SearchResult
from curriculum.subset_files import prepare_split_root, threshold_tag
from datasets.records import split_path
from utils.cli import run_cli
from utils.errors import InputError, RunFailed
from utils.io import atomic_write_text, write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m curriculum.ssa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--source_split", help="split to curate (default: the training split, train_pseudo)")
    p.add_argument("--measurer", help="use this checkpoint as the reliability measurer instead of training one")
    return p


def candidate_name(h: float) -> str:
    """The step name of the candidate at threshold ``h``."""
    return f"h_{threshold_tag(h)}"


class SSARuns(RecordedRuns):
    """SSA's steps: ``measurer`` (trained or given), ``scoring`` (in ``runs/score``), a candidate ``h_<h>`` per
    threshold and the search ``ssa``."""

    def __init__(self, args: argparse.Namespace, train_args: List[str], state: DriverState, work: str,
                 train_split: str, n_source: int) -> None:
        super().__init__("ssa", args, train_args, state, work, train_split)
        self.n_source = n_source
        self.checkpoint: Optional[str] = None
        self.reliability_file: Optional[str] = None

    def measurer(self, source: str, samples: List[Any]) -> str:
        if self.args.measurer:
            measurer = os.path.abspath(self.args.measurer)
            if not os.path.isfile(measurer):
                raise InputError(f"--measurer {self.args.measurer}: no such checkpoint")
            self.checkpoint = self.given_measurer("measurer", measurer)
        else:
            record = self.train_step("measurer", samples, "measurer", {"n_samples": len(samples)})
            self.checkpoint = record["result"]["best_checkpoint"]
        return self.checkpoint

    def score(self, measurer: str, model: str, source: str, samples: List[Any]) -> np.ndarray:
        run_dir = os.path.join(self.runs, "score")
        record = self.score_step("scoring", {"kind": "score", "run_dir": run_dir, "measurer": model,
                                             "output_dir": os.path.join(run_dir, "output"),
                                             "command": self.score_command(run_dir, model)}, model, samples)
        self.reliability_file = record["result"]["reliability_file"]
        return self.reliabilities(record, samples)

    def info(self, h: float, n_samples: int) -> Dict[str, Any]:
        return {"h": h, "n_samples": n_samples, "share": n_samples / self.n_source}

    def train(self, candidate: Candidate, samples: List[Any]) -> Optional[float]:
        return self.candidate_step(candidate_name(candidate.h), samples, self.info(candidate.h, len(samples)))

    def search(self, evaluate: Callable[[float], Optional[float]], step: int, source: str,
               measurer: str) -> SearchResult:
        return self.search_step("ssa", evaluate)


def _candidate_row(record: Dict[str, Any], h_star: float) -> Dict[str, Any]:
    result = record.get("result") or {}
    return {"h": record["h"], "n_samples": record["n_samples"], "share": record["share"],
            "val_accu": result.get("val_accu"), "best_epoch": result.get("best_epoch"),
            "skipped": record.get("skipped"), "chosen": record["h"] == h_star, "run_dir": record.get("run_dir")}


def run(args: argparse.Namespace, train_args: List[str]) -> Dict[str, Any]:
    """Run (or resume) the SSA driver in ``args.work_dir``; returns the result (also in ssa_result.json)."""
    with work_dir_lock(os.path.abspath(args.work_dir)):
        return _run(args, train_args)


def _run(args: argparse.Namespace, train_args: List[str]) -> Dict[str, Any]:
    validate_common(args, train_args)
    train_split = train_split_of(train_args)
    source_split = args.source_split or train_split
    work = os.path.abspath(args.work_dir)
    options = {**common_options(args, train_args), "source_split": source_split,
               "measurer": os.path.abspath(args.measurer) if args.measurer else None}
    dataset, split_root = args.dataset, options["split_root"]
    source = load_source(split_path(split_root, dataset, source_split), dataset, f"source split {source_split}")
    state = DriverState(os.path.join(work, "ssa_state.json"), "ssa", options, force=args.force)
    runs = SSARuns(args, train_args, state, work, train_split, len(source))

    try:
        chosen = algorithm.ssa(source, runs)
    except algorithm.NoFeasibleThreshold:
        raise RunFailed(f"no feasible threshold: every candidate selected fewer than --min_samples "
                         f"{args.min_samples} samples") from None
    found, h_star = chosen.searches[chosen.measurer], chosen.h_star

    best = state.done(candidate_name(h_star))
    if final_is_best_candidate(args):
        final = best
    elif skips_final(args):
        final = None
    else:
        final = runs.train_step(f"final_h_{threshold_tag(h_star)}", chosen.new, "final",
                                runs.info(h_star, len(chosen.new)))
    selected_root = os.path.join(work, "selected")
    selected_file = prepare_split_root(selected_root, dataset, split_root, train_split, chosen.new)
    rows = [_candidate_row(state.step(candidate_name(e["h"])), h_star) for e in found.evaluations]
    table = markdown_table(
        ["h", "samples", "share", "val_accu", "best epoch", "note"],
        [[f"{r['h']:g}", r["n_samples"], f"{r['share']:.3f}", fmt(r["val_accu"]),
          "-" if r["best_epoch"] is None else r["best_epoch"],
          "**h\\***" if r["chosen"] else (r["skipped"] or "")] for r in rows])
    result = {
        "dataset": dataset, "h_star": h_star, "candidate_val_accu": found.accuracy,
        **final_summary(final), "selected_split": selected_file, "selected_split_root": selected_root,
        "n_selected": len(chosen.new), "n_source": len(source), "measurer": runs.checkpoint,
        "reliability_file": runs.reliability_file, "search_trace": found.trace, "candidates": rows,
    }
    write_json(os.path.join(work, "ssa_candidates.json"), rows)
    atomic_write_text(os.path.join(work, "ssa_candidates.md"),
                      f"# SSA candidates: {dataset}\n\nh* = {h_star:g} ({len(chosen.new)} of {len(source)} samples), "
                      f"{final_line(result)}\n\n{table}")
    write_json(os.path.join(work, "ssa_result.json"), result)
    state.data["result"] = {k: v for k, v in result.items() if k not in ("candidates", "search_trace")}
    state.save()
    return result


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]``."""
    driver_argv, train_args = split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(driver_argv)
    result = run(args, train_args)
    print(json.dumps({k: result[k] for k in ("h_star", "final_val_accu", "final_model", "selected_split",
                                             "n_selected", "n_source")}, indent=2))
    print(f"candidate table: {os.path.join(os.path.abspath(args.work_dir), 'ssa_candidates.md')}")
    return result


if __name__ == "__main__":
    run_cli(main)
