"""Score the reliability of every sample of a split (default ``train_pseudo``) with a measurer checkpoint.

Reliability = IoU(measurer prediction, pseudo box). Writes under ``--output_dir``: the per-sample JSON lines
(``{dataset}_{split}_reliability.jsonl``), the official-compatible subsets ``{dataset}_train_pseudo_refine_*.pth``
and low-reliability lists, the 1000-bin histogram (JSON, PNG, TensorBoard), summary statistics, and with
``--report DIR`` report.md / report.html there: the least and most reliable pseudo labels with the measurer's box.
Runs on any number of processes; every sample is scored exactly once, in split order.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import engine
from curriculum.reliability import write_scoring_outputs
from datasets import DataCache
from eval import GALLERY_SIZE, evaluate_split, sample_gallery
from utils.cli import run_cli
from utils.io import write_jsonl
from utils.misc import barrier, is_main_process
from utils.report import extremes, grounding_metrics, metric_tables, write_report
from utils.run_setup import SummaryWriterOnMain, run_distributed


def write_reliability_report(args: argparse.Namespace, rows: List[Dict[str, Any]], dataset: Any,
                             summary: Dict[str, Any]) -> Dict[str, str]:
    """report.md / report.html: the reliability tables and histogram, and the least and most reliable pseudo labels
    (green: the pseudo box, red: the measurer's prediction; reliability = their IoU)."""
    least, most = extremes(sample_gallery(rows, dataset), GALLERY_SIZE)
    metrics = grounding_metrics([r["iou"] for r in rows], [r["query"] for r in rows])
    quantiles = summary["quantiles"]
    stats = ("Reliability", ["samples", "mean", "median", "share >= 0.5", "zeros"],
             [[str(summary["n"]), f"{summary['mean']:.4f}", f"{quantiles['0.5']:.4f}",
               f"{100 * summary['share_at_least_0_5']:.2f}%", str(summary["count_zero"])]])
    return write_report(args.report,
                        f"{args.dataset} {args.eval_set}: reliability by {os.path.basename(args.eval_model)}",
                        [stats, *metric_tables(metrics)], [r["iou"] for r in rows], "reliability",
                        [(f"Least reliable {len(least)} pseudo labels (what the curriculum drops first)", least),
                         (f"Most reliable {len(most)} pseudo labels", most)],
                        numbers={"checkpoint": args.eval_model, "split": args.eval_set, "metrics": metrics},
                        notes=["Reliability is the IoU of the measurer's prediction (red) with the pseudo label's "
                               "box (green); the accuracy tables read it as the measurer's IoU."])


def run(args: argparse.Namespace, data_cache: Optional[DataCache] = None) -> Dict[str, Any]:
    result, dataset = evaluate_split(args, data_cache)
    summary: Dict[str, Any] = {}
    if is_main_process():
        rows = engine.prediction_rows(result, dataset, args.imsize)
        jsonl = os.path.join(args.output_dir, f"{args.dataset}_{args.eval_set}_reliability.jsonl")
        write_jsonl(jsonl, rows)
        writer = SummaryWriterOnMain(args.output_dir)
        samples = [record.source for record in dataset.records]
        summary = write_scoring_outputs(jsonl, samples, args.output_dir, args.dataset, args.eval_set,
                                        tb_writer=writer.writer)
        writer.close()
        if args.report:
            summary["report"] = write_reliability_report(args, rows, dataset, summary)["html"]
        print(json.dumps({"reliability_file": jsonl, **summary, "eval_seconds": round(result.seconds, 3),
                          "eval_samples_per_s": round(result.samples_per_s, 3)}, default=str))
    barrier()
    return summary


def main(argv: Optional[Sequence[str]] = None, data_cache: Optional[DataCache] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]`` (tests call this in-process; so does the in-process launcher,
    with its ``data_cache``)."""
    return run_distributed("reliability", functools.partial(run, data_cache=data_cache), argv)


if __name__ == "__main__":
    run_cli(main)
