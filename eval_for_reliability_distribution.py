"""Score the reliability of every sample of a split (default ``train_pseudo``) with a measurer checkpoint.

Reliability = IoU(measurer prediction, pseudo box). Writes under ``--output_dir``: the per-sample JSON lines
(``{dataset}_{split}_reliability.jsonl``), the official-compatible subsets ``{dataset}_train_pseudo_refine_*.pth``
and low-reliability lists, the 1000-bin histogram (JSON, PNG, TensorBoard) and summary statistics.
Runs on any number of processes; every sample is scored exactly once, in split order.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, Optional, Sequence

import engine
from curriculum.reliability import write_scoring_outputs
from eval import evaluate_split
from utils.cli import run_cli
from utils.io import write_jsonl
from utils.misc import barrier, is_main_process
from utils.run_setup import SummaryWriterOnMain, run_distributed


def run(args: argparse.Namespace) -> Dict[str, Any]:
    result, dataset = evaluate_split(args)
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
        print(json.dumps({"reliability_file": jsonl, **summary, "eval_seconds": round(result.seconds, 3),
                          "eval_samples_per_s": round(result.samples_per_s, 3)}, default=str))
    barrier()
    return summary


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]`` (tests call this in-process)."""
    return run_distributed("reliability", run, argv)


if __name__ == "__main__":
    run_cli(main)
