"""Evaluate a CLIP-VG checkpoint on a split, on 1 or N processes: accuracy@0.5 (the paper's metric) and mean IoU,
accuracy@0.6-0.9, and accuracy@0.5 by expression length and by spatial words (``utils/report.py``).

``--save_predictions PATH`` writes one JSON line per sample, in split order, with boxes in original pixels.
``--report DIR`` writes report.json / report.md / report.html (tables, IoU histogram, worst and best predictions).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import engine
from datasets import DataCache, build_dataset
from datasets.loader import build_loader
from models import build_model_from_checkpoint, describe_parameters
from utils.cli import run_cli
from utils.checkpoint import load_checkpoint, load_model_state
from utils.errors import InputError, UsageError
from utils.io import check_writable_dir, check_writable_file, write_jsonl
from utils.misc import broadcast_object, get_rank, is_main_process, seed_everything
from utils.report import GalleryItem, extremes, gallery_items, grounding_metrics, metric_tables, write_report
from utils.run_setup import (adopt_checkpoint_settings, append_log_line, prepare_output_dir,
                             resolve_checkpoint_path, run_distributed)


def evaluate_split(args: argparse.Namespace, data_cache: Optional[DataCache] = None
                   ) -> Tuple[engine.EvalResult, Any]:
    """Load ``--eval_model`` (CLIP weights from the checkpoint itself), predict every sample of
    ``--eval_set`` exactly once over all processes, and return the result with the dataset (built with the
    caller's ``data_cache``, default its own)."""
    if not args.eval_model:
        raise UsageError("--eval_model is required: the checkpoint to evaluate")
    checkpoint_path = resolve_checkpoint_path(args.eval_model, args.output_dir, "--eval_model")
    prepare_output_dir(args.output_dir)
    error = None
    if is_main_process():  # the rank that writes the outputs checks them before any work; every rank stops
        try:
            if args.save_predictions:
                check_writable_file(args.save_predictions, "--save_predictions")
            if args.report:
                check_writable_dir(args.report, "--report")
        except InputError as exc:
            error = str(exc)
    error = broadcast_object(error)
    if error:
        raise InputError(error)
    ckpt = load_checkpoint(checkpoint_path)
    adopt_checkpoint_settings(args, ckpt)
    dataset = build_dataset(args.eval_set, args, train=False, cache=data_cache)
    engine.require_samples(dataset, f"--eval_set {args.eval_set} of {args.dataset} (--split_root {args.split_root})")
    seed_everything(args.seed + get_rank())
    model = build_model_from_checkpoint(ckpt, args)
    load_model_state(model, ckpt)
    model.to(args.device)
    print(describe_parameters(model))
    print(f"| {checkpoint_path}: trained for {int(ckpt.get('epoch', -1)) + 1} epochs")
    del ckpt
    loader = build_loader(dataset, args, train=False)
    result = engine.evaluate(model, loader, args.device, args.amp, desc=f"{args.dataset} {args.eval_set}")
    return result, dataset


GALLERY_SIZE = 12
"""Samples in each of the report's galleries (worst, best)."""


def sample_gallery(rows: List[Dict[str, Any]], dataset: Any) -> List[GalleryItem]:
    """``engine.prediction_rows`` as gallery items with the image files of ``dataset``."""
    return gallery_items(rows, lambda row: dataset.image_path(dataset.records_by_index[row["index"]]))


def write_eval_report(args: argparse.Namespace, metrics: Dict[str, Any], rows: List[Dict[str, Any]],
                      dataset: Any) -> Dict[str, str]:
    """``--report DIR``: the metric tables, the IoU histogram and the worst / best predictions."""
    worst, best = extremes(sample_gallery(rows, dataset), GALLERY_SIZE)
    return write_report(args.report, f"{args.dataset} {args.eval_set}: {os.path.basename(args.eval_model)}",
                        metric_tables(metrics), [r["iou"] for r in rows], "IoU",
                        [(f"Worst {len(worst)} predictions (lowest IoU)", worst),
                         (f"Best {len(best)} predictions (highest IoU)", best)],
                        numbers={"checkpoint": args.eval_model, "split": args.eval_set, "metrics": metrics})


def run(args: argparse.Namespace, data_cache: Optional[DataCache] = None) -> Dict[str, Any]:
    tic = time.perf_counter()
    result, dataset = evaluate_split(args, data_cache)
    queries = [dataset.records_by_index[i].query for i in result.indices.tolist()]
    metrics = grounding_metrics(result.iou.tolist(), queries)
    split = args.eval_set
    stats = {"test_model": args.eval_model, f"{split}_set_accuracy": result.accuracy,
             f"{split}_set_miou": result.mean_iou, "samples": len(result.iou),
             **{f"{split}_set_{k}": metrics[k] for k in metrics if k.startswith("accuracy@") and k != "accuracy@0.5"},
             f"{split}_set_by_length": metrics["by_length"], f"{split}_set_by_spatial": metrics["by_spatial"],
             "seconds": round(time.perf_counter() - tic, 3), "eval_seconds": round(result.seconds, 3),
             "eval_samples_per_s": round(result.samples_per_s, 3)}
    if is_main_process():
        print(json.dumps(stats))
        name = os.path.splitext(os.path.basename(args.eval_model))[0]
        log = os.path.join(args.output_dir, f"eval_{args.dataset}_{args.eval_set}_{name}_log.txt")
        append_log_line(log, str(args))
        append_log_line(log, json.dumps(stats))
        rows = engine.prediction_rows(result, dataset, args.imsize)
        if args.save_predictions:
            write_jsonl(args.save_predictions, rows)
            print(f"| predictions written to {args.save_predictions}")
        if args.report:
            paths = write_eval_report(args, metrics, rows, dataset)
            print(f"| report written to {paths['html']} and {paths['md']}")
    return stats


def main(argv: Optional[Sequence[str]] = None, data_cache: Optional[DataCache] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]`` (tests call this in-process; so does the demo, with its
    ``data_cache``)."""
    return run_distributed("eval", functools.partial(run, data_cache=data_cache), argv)


if __name__ == "__main__":
    run_cli(main)
