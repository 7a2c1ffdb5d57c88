"""Multi-source self-paced adapting (MSA, docs/curriculum.md), automated and resumable.

    python -m curriculum.msa --dataset D --data_root R --split_root S --work_dir W \\
        --sources template:PATH,relation:PATH,caption:PATH [--source_specific_only] [--order a,b,c] \\
        [--entity_vocab FILE] [--measurers name:CKPT,...] [--delta 0.1] [--launcher ...] \\
        [--candidate_epochs N] [--final_epochs M] -- <training arguments>

The algorithm is ``curriculum.algorithm.msa``; this driver runs it with every step recorded:

1. order the sources easy to hard by mean entities per expression (``curriculum.difficulty``; ``--order``
   overrides);
2. one measurer per source i (trained on all of its pseudo labels, or given with ``--measurers``);
3. the reliability matrix R_ij: source j scored by measurer i (SR: i = j, CR: i != j); with
   ``--source_specific_only`` only the diagonal;
4. with D empty, for each source j in order and each measurer i (or only i = j), the greedy search over h where a
   candidate trains on D + percent(H_ij, h); the (i*, h*) of best validation accuracy wins (ties: the
   source-specific measurer, then the earlier measurer in the order) and percent(H_i*j, h*) joins D;
5. the final model trains on D (the last step's best candidate itself when ``--candidate_epochs`` equals
   ``--final_epochs`` and ``--candidate_budget`` the ``--update_budget``).

Outputs in W: ``msa_state.json`` (every step recorded; resumable like SSA), ``runs/<step>/``, ``selected/`` (a ready
``--split_root``: ``{D}/train_separate/{order}_{D}_train_pseudo_{source}_{h}.pth`` per source, their merge
``{D}/{D}_train_pseudo.pth``, the other splits linked), ``msa_result.json``, ``msa_table.md``,
``msa_candidates.json`` and ``msa_reliability_matrix.png`` (Fig. 5-style histograms of R_ij). Every source sample
must be one training can use: a source holding others is refused before the first run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from curriculum import algorithm
from curriculum.algorithm import Candidate, Step
from curriculum.difficulty import entity_counter, load_lexicon, order_sources
from curriculum.reliability import plot_histogram_grid, reliability_histogram, summary_stats
from curriculum.report import final_line, final_summary, fmt, markdown_table
from curriculum.runs.command_line import (add_common_arguments, common_options, final_is_best_candidate, load_source,
                                          skips_final, split_argv, train_split_of, validate_common)
from curriculum.runs.lock import work_dir_lock
from curriculum.runs.state import DriverState
from curriculum.runs.steps import RecordedRuns
from curriculum.search import SearchResult
from curriculum.subset_files import (link_other_splits, list_separate, merge_separate_dir, separate_name, threshold_tag,
                                     write_separate)
from datasets.records import LAYOUTS, check_dataset_name, split_path
from utils.cli import run_cli
from utils.errors import InputError, RunFailed, UsageError
from utils.io import atomic_write_text, write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m curriculum.msa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--sources", required=True, help="name:split_file pairs, comma separated, e.g. "
                                                    "template:a.pth,relation:b.pth,caption:c.pth")
    p.add_argument("--order", help="comma-separated source names easy to hard (default: by mean entities)")
    p.add_argument("--entity_vocab", help="more class names for entity counting (JSON list, synonyms.json or one "
                                          "name per line), added to the pseudo-label module's built-in words")
    p.add_argument("--measurers", help="name:checkpoint pairs of measurers to use instead of training them")
    p.add_argument("--source_specific_only", action="store_true",
                   help="score each source only with its own measurer (SR only, cheaper)")
    return p


def parse_pairs(text: str, flag: str) -> Dict[str, str]:
    """'a:x,b:y' -> {'a': 'x', 'b': 'y'} (order kept); SystemExit naming ``flag`` when malformed."""
    pairs: Dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, path = item.partition(":")
        if not sep or not name or not path:
            raise UsageError(f"{flag}: {item!r} is not name:path")
        if name in pairs:
            raise UsageError(f"{flag}: source {name!r} given twice")
        try:
            separate_name(1, "d", name, 0.5)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
        pairs[name] = os.path.abspath(path)
    if not pairs:
        raise UsageError(f"{flag}: no name:path pairs given")
    return pairs


def candidate_name(t: int, source: str, measurer: str, h: float) -> str:
    """The step name of a candidate: step ``t`` adds ``source`` scored by ``measurer`` at threshold ``h``."""
    return f"step{t}_{source}_by_{measurer}_h_{threshold_tag(h)}"


class MSARuns(RecordedRuns):
    """MSA's steps: ``measurer_<i>`` (trained or given), ``score_<i>_on_<j>``, the candidates
    ``step<t>_<j>_by_<i>_h_<h>`` and their searches ``step<t>_<j>_by_<i>``; keeps the reliability matrix."""

    def __init__(self, args: argparse.Namespace, train_args: List[str], state: DriverState, work: str,
                 train_split: str, given: Dict[str, str]) -> None:
        super().__init__("msa", args, train_args, state, work, train_split)
        self.given = given
        self.checkpoints: Dict[str, str] = {}
        self.reliability: Dict[str, Dict[str, np.ndarray]] = {}
        self.matrix: Dict[str, Dict[str, Any]] = {}

    def measurer(self, source: str, samples: List[Any]) -> str:
        name = f"measurer_{source}"
        if source in self.given:
            if not os.path.isfile(self.given[source]):
                raise InputError(f"--measurers {source}: {self.given[source]} is not a file")
            checkpoint = self.given_measurer(name, self.given[source], source=source)
        else:
            record = self.train_step(name, samples, "measurer", {"source": source, "n_samples": len(samples)})
            checkpoint = record["result"]["best_checkpoint"]
        self.checkpoints[source] = checkpoint
        return checkpoint

    def score(self, measurer: str, model: str, source: str, samples: List[Any]) -> np.ndarray:
        name = f"score_{measurer}_on_{source}"
        run_dir = os.path.join(self.runs, name)
        record = self.score_step(name, {"kind": "score", "measurer": measurer, "source": source, "run_dir": run_dir,
                                        "output_dir": os.path.join(run_dir, "output"),
                                        "command": self.score_command(run_dir, model)}, model, samples)
        r = self.reliabilities(record, samples)
        stats = summary_stats(r)
        self.reliability.setdefault(measurer, {})[source] = r
        self.matrix.setdefault(measurer, {})[source] = {
            "type": "SR" if measurer == source else "CR", "reliability_file": record["result"]["reliability_file"],
            "mean": stats["mean"], "share_at_least_0_5": stats["share_at_least_0_5"],
            "count_zero": stats["count_zero"], "n": stats["n"]}
        return r

    def train(self, candidate: Candidate, samples: List[Any]) -> Optional[float]:
        c = candidate
        info = {"step": c.step, "source": c.source, "measurer": c.measurer, "h": c.h, "n_new": c.n_new,
                "n_train": len(samples)}
        return self.candidate_step(candidate_name(c.step, c.source, c.measurer, c.h), samples, info)

    def search(self, evaluate: Callable[[float], Optional[float]], step: int, source: str,
               measurer: str) -> SearchResult:
        return self.search_step(f"step{step}_{source}_by_{measurer}", evaluate)


def source_order(args: argparse.Namespace, samples: Dict[str, List[Any]]) -> Dict[str, Optional[float]]:
    """Source name -> mean entities per expression, easy to hard (``--order`` given: that order, no means)."""
    if args.order:
        order = [name.strip() for name in args.order.split(",")]
        if sorted(order) != sorted(samples):
            raise UsageError(f"--order {args.order}: must list each of {', '.join(samples)} once")
        return {name: None for name in order}
    try:
        counter = entity_counter(load_lexicon(args.entity_vocab))
    except (OSError, ValueError) as exc:
        raise InputError(f"--entity_vocab {args.entity_vocab}: {exc}") from None
    query = LAYOUTS[args.dataset].query_field
    return dict(order_sources({n: [str(s[query]) for s in items] for n, items in samples.items()}, counter))


def run(args: argparse.Namespace, train_args: List[str]) -> Dict[str, Any]:
    """Run (or resume) the MSA driver in ``args.work_dir``; returns the result (also in msa_result.json)."""
    with work_dir_lock(os.path.abspath(args.work_dir)):
        return _run(args, train_args)


def _options(args: argparse.Namespace, train_args: List[str]) -> Dict[str, Any]:
    """The checked options recorded in the state file (``sources`` and ``measurers`` as name -> path)."""
    validate_common(args, train_args)
    try:
        check_dataset_name(args.dataset)
    except ValueError as exc:
        raise UsageError(f"--dataset: {exc}") from None
    paths = parse_pairs(args.sources, "--sources")
    given = parse_pairs(args.measurers, "--measurers") if args.measurers else {}
    unknown = sorted(set(given) - set(paths))
    if unknown:
        raise UsageError(f"--measurers: {', '.join(unknown)} not among --sources {', '.join(paths)}")
    return {**common_options(args, train_args), "sources": paths, "order": args.order,
            "entity_vocab": os.path.abspath(args.entity_vocab) if args.entity_vocab else None,
            "measurers": given, "source_specific_only": args.source_specific_only}


def _run(args: argparse.Namespace, train_args: List[str]) -> Dict[str, Any]:
    options = _options(args, train_args)
    train_split = train_split_of(train_args)
    work = os.path.abspath(args.work_dir)
    dataset, split_root = args.dataset, options["split_root"]
    samples = {name: load_source(path, dataset, f"--sources {name}") for name, path in options["sources"].items()}
    state = DriverState(os.path.join(work, "msa_state.json"), "msa", options, force=args.force)

    difficulty = source_order(args, samples)
    order = list(difficulty)
    state.data["ordering"] = {"order": order, "mean_entities": difficulty}
    state.save()
    print(f"[msa] source order (easy to hard): {', '.join(order)}", flush=True)

    selected_root = os.path.join(work, "selected")
    separate_dir = os.path.join(selected_root, dataset, "train_separate")
    for _, _, stale in list_separate(separate_dir, dataset):  # this driver's own files, rewritten below
        os.remove(stale)
    runs = MSARuns(args, train_args, state, work, train_split, options["measurers"])
    chosen: List[Any] = []
    steps: List[Dict[str, Any]] = []
    candidates: List[Dict[str, Any]] = []
    try:
        for step in algorithm.msa(samples, order, runs, args.source_specific_only, args.min_gain):
            chosen = chosen + step.new
            candidates += _candidate_rows(state, step)
            steps.append(_step_row(state, step, samples[step.source], separate_dir, dataset, len(chosen)))
            state.data["msa_steps"] = steps
            state.save()
            print(f"[msa] step {step.step}: {step.source} with measurer {step.measurer}, h* = {step.h_star:g}, "
                  f"+{len(step.new)} samples (val accuracy {step.accuracy:.4f})", flush=True)
    except algorithm.NoFeasibleThreshold as exc:
        raise RunFailed(f"step {exc.step} ({exc.source}): no feasible threshold for any measurer (--min_samples "
                         f"{args.min_samples})") from None

    if final_is_best_candidate(args):
        final = state.done(candidate_name(len(order), order[-1], steps[-1]["measurer"], steps[-1]["h_star"]))
    elif skips_final(args):
        final = None
    else:
        final = runs.train_step("final", chosen, "final", {"n_samples": len(chosen)})
    merged = split_path(selected_root, dataset, train_split)
    n_merged = merge_separate_dir(separate_dir, dataset, merged)
    if n_merged != len(chosen):
        raise RuntimeError(f"{separate_dir}: merged {n_merged} samples, expected {len(chosen)} "
                           "(stray train_separate files?)")
    link_other_splits(split_root, dataset, selected_root, exclude=[train_split])

    grid = {i: {j: reliability_histogram(r) for j, r in row.items()} for i, row in runs.reliability.items()}
    figure = plot_histogram_grid(grid, order, order, os.path.join(work, "msa_reliability_matrix.png"),
                                 f"{dataset}: reliability R_ij (row: measurer i, column: source j)")
    result = {"dataset": dataset, "order": order, "mean_entities": difficulty, "steps": steps,
              **final_summary(final), "selected_split": merged, "selected_split_root": selected_root,
              "separate_files": [s["separate_file"] for s in steps], "n_selected": len(chosen),
              "reliability_matrix": runs.matrix, "reliability_figure": figure, "measurers": runs.checkpoints}
    write_json(os.path.join(work, "msa_candidates.json"), candidates)
    atomic_write_text(os.path.join(work, "msa_table.md"),
                      _report(dataset, order, difficulty, runs.matrix, steps, candidates, result))
    write_json(os.path.join(work, "msa_result.json"), result)
    state.data["result"] = result
    state.save()
    return result


def _candidate_rows(state: DriverState, step: Step) -> List[Dict[str, Any]]:
    """One row per threshold every measurer's search of ``step`` evaluated."""
    rows = []
    for i, found in step.searches.items():
        for e in found.evaluations:
            rec = state.step(candidate_name(step.step, step.source, i, e["h"]))
            rows.append({"step": step.step, "source": step.source, "measurer": i, "h": e["h"], "n_new": rec["n_new"],
                         "n_train": rec["n_train"], "val_accu": e["accuracy"],
                         "best_epoch": (rec.get("result") or {}).get("best_epoch"), "skipped": rec.get("skipped"),
                         "run_dir": rec.get("run_dir"),
                         "chosen": i == step.measurer and e["h"] == step.h_star})
    return rows


def _step_row(state: DriverState, step: Step, source_samples: List[Any], separate_dir: str, dataset: str,
              n_total: int) -> Dict[str, Any]:
    """The record of a finished step; writes its ``train_separate`` file."""
    path, _ = write_separate(separate_dir, step.step, dataset, step.source, source_samples, step.reliability,
                             step.h_star)
    best_run = state.done(candidate_name(step.step, step.source, step.measurer, step.h_star))
    return {"step": step.step, "source": step.source, "measurer": step.measurer,
            "reliability": "SR" if step.measurer == step.source else "CR", "h_star": step.h_star,
            "val_accu": step.accuracy, "n_new": len(step.new), "n_of_source": len(source_samples),
            "n_total": n_total, "separate_file": path, "best_run": best_run["run_dir"],
            "best_model": best_run["result"]["best_checkpoint"]}


def _report(dataset: str, order: List[str], difficulty: Dict[str, Optional[float]],
            matrix: Dict[str, Dict[str, Any]], steps: List[Dict[str, Any]], candidates: List[Dict[str, Any]],
            result: Dict[str, Any]) -> str:
    parts = [f"# MSA: {dataset}\n",
             f"{final_line(result)}; {result['n_selected']} samples selected: {result['selected_split']}\n",
             "## Sources (easy to hard)\n",
             markdown_table(["order", "source", "mean entities"],
                            [[k, s, fmt(difficulty[s], 3)] for k, s in enumerate(order, 1)]),
             "\n## Reliability matrix (mean / share >= 0.5; row: measurer i, column: source j)\n",
             markdown_table(["measurer \\ source", *order],
                            [[i, *[f"{m['type']} {m['mean']:.3f} / {m['share_at_least_0_5']:.3f}"
                                   if (m := matrix[i].get(j)) else "-" for j in order]] for i in order]),
             "\n## Steps\n",
             markdown_table(["step", "source", "measurer", "h*", "val_accu", "added", "total"],
                            [[s["step"], s["source"], f"{s['measurer']} ({s['reliability']})", f"{s['h_star']:g}",
                              fmt(s["val_accu"]), f"{s['n_new']} of {s['n_of_source']}", s["n_total"]]
                             for s in steps]),
             "\n## Every candidate\n",
             markdown_table(["step", "source", "measurer", "h", "new", "train", "val_accu", "note"],
                            [[c["step"], c["source"], c["measurer"], f"{c['h']:g}", c["n_new"], c["n_train"],
                              fmt(c["val_accu"]), "**chosen**" if c["chosen"] else (c["skipped"] or "")]
                             for c in candidates])]
    return "\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]``."""
    driver_argv, train_args = split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(driver_argv)
    result = run(args, train_args)
    print(json.dumps({k: result[k] for k in ("order", "final_val_accu", "final_model", "selected_split",
                                             "n_selected")}, indent=2))
    print(f"report: {os.path.join(os.path.abspath(args.work_dir), 'msa_table.md')}")
    return result


if __name__ == "__main__":
    run_cli(main)
