"""Single-source self-paced adapting (SSA, SPEC §4), automated and resumable.

    python -m curriculum.ssa --dataset D --data_root R --split_root S --work_dir W \\
        [--source_split train_pseudo] [--measurer CKPT] [--delta 0.1] [--launcher "torchrun --nproc_per_node=4"] \\
        [--candidate_epochs N] [--final_epochs M] -- <training arguments, e.g. --batch_size 64 --lr 0.00025 ...>

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
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from curriculum.driver import (add_common_arguments, common_options, final_is_best_candidate, final_line,
                               final_summary, fmt, install_sigterm_exit, make_launchers, markdown_table, run_length,
                               skips_final, split_argv, train_split_of, validate_common)
from curriculum.reliability import load_reliabilities
from curriculum.search import greedy_threshold_search
from curriculum.selection import load_split, prepare_split_root, select, split_file, threshold_tag
from curriculum.state import DriverState, work_dir_lock
from utils.io import atomic_write_text, write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m curriculum.ssa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--source_split", help="split to curate (default: the training split, train_pseudo)")
    p.add_argument("--measurer", help="use this checkpoint as the reliability measurer instead of training one")
    return p


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
    os.makedirs(work, exist_ok=True)
    state = DriverState(os.path.join(work, "ssa_state.json"), "ssa", options, force=args.force)
    train, candidate, score = make_launchers(args, train_args)
    dataset, data_root, split_root = args.dataset, options["data_root"], options["split_root"]
    runs = os.path.join(work, "runs")
    source = load_split(split_file(split_root, dataset, source_split))
    if not source:
        raise SystemExit(f"{split_file(split_root, dataset, source_split)}: the source split is empty")

    def train_step(name: str, samples: List[Any], role: str, info: Dict[str, Any]) -> Dict[str, Any]:
        run_dir = os.path.join(runs, name)
        epochs, steps = run_length(args, role, len(samples))
        launcher = candidate if role == "candidate" else train
        planned = {**info, "kind": "train", "run_dir": run_dir, "output_dir": os.path.join(run_dir, "output"),
                   "command": launcher.command(run_dir, dataset, data_root, epochs, steps)}
        return state.run_step(name, planned, lambda: launcher.run(run_dir, dataset, data_root, split_root, samples,
                                                                  epochs, train_split, tag=f"ssa {name}",
                                                                  max_steps=steps))

    # 1. measurer
    if args.measurer:
        measurer = os.path.abspath(args.measurer)
        if not os.path.isfile(measurer):
            raise SystemExit(f"--measurer {args.measurer}: no such checkpoint")
        state.set_step("measurer", {"kind": "given", "status": "done", "result": {"best_checkpoint": measurer}})
    else:
        rec = train_step("measurer", source, "measurer", {"n_samples": len(source)})
        measurer = rec["result"]["best_checkpoint"]

    # 2. scoring
    score_dir = os.path.join(runs, "score")
    rec = state.run_step("scoring", {"kind": "score", "run_dir": score_dir, "measurer": measurer,
                                     "output_dir": os.path.join(score_dir, "output"),
                                     "command": score.command(score_dir, measurer, dataset, data_root, train_split)},
                         lambda: score.run(score_dir, measurer, dataset, data_root, split_root, source, train_split,
                                           tag="ssa scoring"))
    reliability_file = rec["result"]["reliability_file"]
    reliabilities = load_reliabilities(reliability_file, source)

    # 3. greedy search
    def candidate_name(h: float) -> str:
        return f"h_{threshold_tag(h)}"

    def evaluate(h: float) -> Optional[float]:
        chosen = select(source, reliabilities, h)
        info = {"h": h, "n_samples": len(chosen), "share": len(chosen) / len(source)}
        name = candidate_name(h)
        if len(chosen) < args.min_samples:
            state.set_step(name, {**info, "status": "done", "skipped": f"{len(chosen)} samples < --min_samples "
                                                                         f"{args.min_samples}"})
            return None
        return train_step(name, chosen, "candidate", info)["result"]["val_accu"]

    found = greedy_threshold_search(evaluate, args.start, args.delta, state=state.search_state("ssa"),
                                    on_update=lambda s: state.set_search_state("ssa", s),
                                    parallel=args.parallel_candidates, min_gain=args.min_gain)
    if found.accuracy is None:
        raise SystemExit(f"no feasible threshold: every candidate selected fewer than --min_samples "
                         f"{args.min_samples} samples")
    h_star = found.h_star
    chosen = select(source, reliabilities, h_star)

    # 4. final model and outputs
    best = state.done(candidate_name(h_star))
    if final_is_best_candidate(args):
        final = best
    elif skips_final(args):
        final = None
    else:
        final = train_step(f"final_h_{threshold_tag(h_star)}", chosen, "final",
                           {"h": h_star, "n_samples": len(chosen), "share": len(chosen) / len(source)})
    selected_root = os.path.join(work, "selected")
    selected_file = prepare_split_root(selected_root, dataset, split_root, train_split, chosen)
    rows = [_candidate_row(state.step(candidate_name(e["h"])), h_star) for e in found.evaluations]
    table = markdown_table(
        ["h", "samples", "share", "val_accu", "best epoch", "note"],
        [[f"{r['h']:g}", r["n_samples"], f"{r['share']:.3f}", fmt(r["val_accu"]),
          "-" if r["best_epoch"] is None else r["best_epoch"],
          "**h\\***" if r["chosen"] else (r["skipped"] or "")] for r in rows])
    result = {
        "dataset": dataset, "h_star": h_star, "candidate_val_accu": found.accuracy,
        **final_summary(final), "selected_split": selected_file, "selected_split_root": selected_root,
        "n_selected": len(chosen), "n_source": len(source), "measurer": measurer,
        "reliability_file": reliability_file, "search_trace": found.trace, "candidates": rows,
    }
    write_json(os.path.join(work, "ssa_candidates.json"), rows)
    atomic_write_text(os.path.join(work, "ssa_candidates.md"),
                      f"# SSA candidates: {dataset}\n\nh* = {h_star:g} ({len(chosen)} of {len(source)} samples), "
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
    install_sigterm_exit()
    main()
