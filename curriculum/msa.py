"""Multi-source self-paced adapting (MSA, SPEC §4), automated and resumable.

    python -m curriculum.msa --dataset D --data_root R --split_root S --work_dir W \\
        --sources template:PATH,relation:PATH,caption:PATH [--source_specific_only] [--order a,b,c] \\
        [--entity_vocab FILE] [--measurers name:CKPT,...] [--delta 0.1] [--launcher ...] \\
        [--candidate_epochs N] [--final_epochs M] -- <training arguments>

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
``msa_candidates.json`` and ``msa_reliability_matrix.png`` (Fig. 5-style histograms of R_ij).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from curriculum.difficulty import entity_counter, load_lexicon, order_sources
from curriculum.driver import (add_common_arguments, common_options, final_is_best_candidate, final_line,
                               final_summary, fmt, install_sigterm_exit, make_launchers, markdown_table, run_length,
                               skips_final, split_argv, train_split_of, validate_common)
from curriculum.reliability import load_reliabilities, plot_histogram_grid, reliability_histogram, summary_stats
from curriculum.search import SearchResult, greedy_threshold_search
from curriculum.selection import (check_layout, link_other_splits, load_split, merge_separate_dir, select,
                                  list_separate, separate_name, split_file, threshold_tag, write_separate)
from curriculum.state import DriverState, work_dir_lock
from datasets.records import LAYOUTS, check_dataset_name
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
            raise SystemExit(f"{flag}: {item!r} is not name:path")
        if name in pairs:
            raise SystemExit(f"{flag}: source {name!r} given twice")
        try:
            separate_name(1, "d", name, 0.5)
        except ValueError as exc:
            raise SystemExit(f"{flag}: {exc}") from None
        pairs[name] = os.path.abspath(path)
    if not pairs:
        raise SystemExit(f"{flag}: no name:path pairs given")
    return pairs


def _best_measurer(found: Dict[str, SearchResult], source: str, order: List[str], min_gain: float = 0.0) -> str:
    """Best accuracy; ties prefer the source-specific measurer, then the earlier one in the order. Another measurer
    replaces the source-specific one only when its best model is better by more than ``min_gain`` (as a threshold
    replaces hm in the search)."""
    def rank(i: str) -> tuple:
        acc = found[i].accuracy
        return (-np.inf if acc is None else acc, i == source, -order.index(i))
    best = max(found, key=rank)
    if best != source and source in found and found[source].accuracy is not None:
        if found[best].accuracy <= found[source].accuracy + min_gain:
            return source
    return best


def run(args: argparse.Namespace, train_args: List[str]) -> Dict[str, Any]:
    """Run (or resume) the MSA driver in ``args.work_dir``; returns the result (also in msa_result.json)."""
    with work_dir_lock(os.path.abspath(args.work_dir)):
        return _run(args, train_args)


def _run(args: argparse.Namespace, train_args: List[str]) -> Dict[str, Any]:
    validate_common(args, train_args)
    try:
        check_dataset_name(args.dataset)
    except ValueError as exc:
        raise SystemExit(f"--dataset: {exc}") from None
    train_split = train_split_of(train_args)
    paths = parse_pairs(args.sources, "--sources")
    given = parse_pairs(args.measurers, "--measurers") if args.measurers else {}
    unknown = sorted(set(given) - set(paths))
    if unknown:
        raise SystemExit(f"--measurers: {', '.join(unknown)} not among --sources {', '.join(paths)}")
    work = os.path.abspath(args.work_dir)
    options = {**common_options(args, train_args), "sources": paths, "order": args.order,
               "entity_vocab": os.path.abspath(args.entity_vocab) if args.entity_vocab else None,
               "measurers": given, "source_specific_only": args.source_specific_only}
    os.makedirs(work, exist_ok=True)
    state = DriverState(os.path.join(work, "msa_state.json"), "msa", options, force=args.force)
    train, candidate, score = make_launchers(args, train_args)
    dataset, data_root, split_root = args.dataset, options["data_root"], options["split_root"]
    runs = os.path.join(work, "runs")

    samples = {name: load_split(path) for name, path in paths.items()}
    for name, items in samples.items():
        if not items:
            raise SystemExit(f"--sources {name}: {paths[name]} is empty")
    check_layout([items[0] for items in samples.values()], "--sources (first sample of each source)")

    # 1. order easy to hard
    if args.order:
        order = [name.strip() for name in args.order.split(",")]
        if sorted(order) != sorted(paths):
            raise SystemExit(f"--order {args.order}: must list each of {', '.join(paths)} once")
        difficulty: Dict[str, Optional[float]] = {name: None for name in order}
    else:
        try:
            counter = entity_counter(load_lexicon(args.entity_vocab))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--entity_vocab {args.entity_vocab}: {exc}") from None
        query = LAYOUTS[dataset].query_field
        ranked = order_sources({n: [str(s[query]) for s in items] for n, items in samples.items()}, counter)
        order = [name for name, _ in ranked]
        difficulty = dict(ranked)
    state.data["ordering"] = {"order": order, "mean_entities": difficulty}
    state.save()
    print(f"[msa] source order (easy to hard): {', '.join(order)}", flush=True)

    def train_step(name: str, train_samples: List[Any], role: str, info: Dict[str, Any]) -> Dict[str, Any]:
        run_dir = os.path.join(runs, name)
        epochs, steps = run_length(args, role, len(train_samples))
        launcher = candidate if role == "candidate" else train
        planned = {**info, "kind": "train", "run_dir": run_dir, "output_dir": os.path.join(run_dir, "output"),
                   "command": launcher.command(run_dir, dataset, data_root, epochs, steps)}
        return state.run_step(name, planned, lambda: launcher.run(run_dir, dataset, data_root, split_root,
                                                                  train_samples, epochs, train_split,
                                                                  tag=f"msa {name}", max_steps=steps))

    # 2. measurers
    measurer: Dict[str, str] = {}
    for i in order:
        if i in given:
            if not os.path.isfile(given[i]):
                raise SystemExit(f"--measurers {i}: {given[i]} is not a file")
            measurer[i] = given[i]
            state.set_step(f"measurer_{i}", {"kind": "given", "status": "done", "source": i,
                                             "result": {"best_checkpoint": given[i]}})
        else:
            rec = train_step(f"measurer_{i}", samples[i], "measurer", {"source": i, "n_samples": len(samples[i])})
            measurer[i] = rec["result"]["best_checkpoint"]

    # 3. reliability matrix
    reliability: Dict[str, Dict[str, np.ndarray]] = {i: {} for i in order}
    matrix: Dict[str, Dict[str, Any]] = {i: {} for i in order}
    for i in order:
        for j in order:
            if args.source_specific_only and i != j:
                continue
            name = f"score_{i}_on_{j}"
            run_dir = os.path.join(runs, name)
            planned = {"kind": "score", "measurer": i, "source": j, "run_dir": run_dir,
                       "output_dir": os.path.join(run_dir, "output"),
                       "command": score.command(run_dir, measurer[i], dataset, data_root, train_split)}
            rec = state.run_step(name, planned, lambda i=i, j=j, run_dir=run_dir: score.run(
                run_dir, measurer[i], dataset, data_root, split_root, samples[j], train_split, tag=f"msa {name}"))
            r = load_reliabilities(rec["result"]["reliability_file"], samples[j])
            reliability[i][j] = r
            stats = summary_stats(r)
            matrix[i][j] = {"type": "SR" if i == j else "CR", "reliability_file": rec["result"]["reliability_file"],
                            "mean": stats["mean"], "share_at_least_0_5": stats["share_at_least_0_5"],
                            "count_zero": stats["count_zero"], "n": stats["n"]}

    # 4. curriculum steps
    selected_root = os.path.join(work, "selected")
    separate_dir = os.path.join(selected_root, dataset, "train_separate")
    for _, _, stale in list_separate(separate_dir, dataset):  # this driver's own files, rewritten below
        os.remove(stale)
    chosen_so_far: List[Any] = []
    steps: List[Dict[str, Any]] = []
    candidates: List[Dict[str, Any]] = []
    for t, j in enumerate(order, 1):
        found: Dict[str, SearchResult] = {}
        for i in ([j] if args.source_specific_only else order):
            key = f"step{t}_{j}_by_{i}"

            def evaluate(h: float, i: str = i, key: str = key) -> Optional[float]:
                new = select(samples[j], reliability[i][j], h)
                info = {"step": t, "source": j, "measurer": i, "h": h, "n_new": len(new),
                        "n_train": len(chosen_so_far) + len(new)}
                name = f"{key}_h_{threshold_tag(h)}"
                if info["n_train"] < args.min_samples:
                    state.set_step(name, {**info, "status": "done",
                                          "skipped": f"{info['n_train']} samples < --min_samples {args.min_samples}"})
                    return None
                rec = train_step(name, chosen_so_far + new, "candidate", info)
                return rec["result"]["val_accu"]

            found[i] = greedy_threshold_search(evaluate, args.start, args.delta,
                                               state=state.search_state(key),
                                               on_update=lambda s, key=key: state.set_search_state(key, s),
                                               parallel=args.parallel_candidates, min_gain=args.min_gain)
            for e in found[i].evaluations:
                rec = state.step(f"{key}_h_{threshold_tag(e['h'])}")
                candidates.append({"step": t, "source": j, "measurer": i, "h": e["h"], "n_new": rec["n_new"],
                                   "n_train": rec["n_train"], "val_accu": e["accuracy"],
                                   "best_epoch": (rec.get("result") or {}).get("best_epoch"),
                                   "skipped": rec.get("skipped"), "run_dir": rec.get("run_dir")})
        best_i = _best_measurer(found, j, order, args.min_gain)
        h_star, accuracy = found[best_i].h_star, found[best_i].accuracy
        if accuracy is None:
            raise SystemExit(f"step {t} ({j}): no feasible threshold for any measurer (--min_samples "
                             f"{args.min_samples})")
        new = select(samples[j], reliability[best_i][j], h_star)
        path, _ = write_separate(separate_dir, t, dataset, j, samples[j], reliability[best_i][j], h_star)
        chosen_so_far = chosen_so_far + new
        best_run = state.done(f"step{t}_{j}_by_{best_i}_h_{threshold_tag(h_star)}")
        steps.append({"step": t, "source": j, "measurer": best_i, "reliability": "SR" if best_i == j else "CR",
                      "h_star": h_star, "val_accu": accuracy, "n_new": len(new), "n_of_source": len(samples[j]),
                      "n_total": len(chosen_so_far), "separate_file": path, "best_run": best_run["run_dir"],
                      "best_model": best_run["result"]["best_checkpoint"]})
        for c in candidates:
            c["chosen"] = c.get("chosen") or (c["step"] == t and c["measurer"] == best_i and c["h"] == h_star)
        state.data["msa_steps"] = steps
        state.save()
        print(f"[msa] step {t}: {j} with measurer {best_i}, h* = {h_star:g}, +{len(new)} samples "
              f"(val accuracy {accuracy:.4f})", flush=True)

    # 5. final model and outputs
    if final_is_best_candidate(args):
        final = state.done(f"step{len(order)}_{order[-1]}_by_{steps[-1]['measurer']}_h_"
                           f"{threshold_tag(steps[-1]['h_star'])}")
    elif skips_final(args):
        final = None
    else:
        final = train_step("final", chosen_so_far, "final", {"n_samples": len(chosen_so_far)})
    merged = split_file(selected_root, dataset, train_split)
    n_merged = merge_separate_dir(separate_dir, dataset, merged)
    if n_merged != len(chosen_so_far):
        raise RuntimeError(f"{separate_dir}: merged {n_merged} samples, expected {len(chosen_so_far)} "
                           "(stray train_separate files?)")
    link_other_splits(split_root, dataset, selected_root, exclude=[train_split])

    grid = {i: {j: reliability_histogram(r) for j, r in row.items()} for i, row in reliability.items()}
    figure = plot_histogram_grid(grid, order, order, os.path.join(work, "msa_reliability_matrix.png"),
                                 f"{dataset}: reliability R_ij (row: measurer i, column: source j)")
    result = {"dataset": dataset, "order": order, "mean_entities": difficulty, "steps": steps,
              **final_summary(final), "selected_split": merged, "selected_split_root": selected_root,
              "separate_files": [s["separate_file"] for s in steps], "n_selected": len(chosen_so_far),
              "reliability_matrix": matrix, "reliability_figure": figure, "measurers": measurer}
    write_json(os.path.join(work, "msa_candidates.json"), candidates)
    atomic_write_text(os.path.join(work, "msa_table.md"),
                      _report(dataset, order, difficulty, matrix, steps, candidates, result))
    write_json(os.path.join(work, "msa_result.json"), result)
    state.data["result"] = result
    state.save()
    return result


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
    install_sigterm_exit()
    main()
