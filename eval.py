"""Evaluate a CLIP-VG checkpoint on a split (accuracy@0.5 and mean IoU), on 1 or N processes.

``--save_predictions PATH`` writes one JSON line per sample, in split order, with boxes in original pixels.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import engine
from datasets import build_dataset
from datasets.loader import build_loader
from models import build_model_from_checkpoint, describe_parameters
from utils.cli import run_cli
from utils.checkpoint import load_checkpoint, load_model_state
from utils.errors import UsageError
from utils.io import write_jsonl
from utils.misc import get_rank, is_main_process, seed_everything
from utils.run_setup import (adopt_checkpoint_settings, append_log_line, prepare_output_dir,
                             resolve_checkpoint_path, run_distributed)


def evaluate_split(args: argparse.Namespace) -> Tuple[engine.EvalResult, Any]:
    """Load ``--eval_model`` (CLIP weights from the checkpoint itself), predict every sample of
    ``--eval_set`` exactly once over all processes, and return the result with the dataset."""
    if not args.eval_model:
        raise UsageError("--eval_model is required: the checkpoint to evaluate")
    checkpoint_path = resolve_checkpoint_path(args.eval_model, args.output_dir, "--eval_model")
    prepare_output_dir(args.output_dir)
    ckpt = load_checkpoint(checkpoint_path)
    adopt_checkpoint_settings(args, ckpt)
    dataset = build_dataset(args.eval_set, args, train=False)
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


def run(args: argparse.Namespace) -> Dict[str, Any]:
    tic = time.perf_counter()
    result, dataset = evaluate_split(args)
    stats = {"test_model": args.eval_model, f"{args.eval_set}_set_accuracy": result.accuracy,
             f"{args.eval_set}_set_miou": result.mean_iou, "samples": len(result.iou),
             "seconds": round(time.perf_counter() - tic, 3), "eval_seconds": round(result.seconds, 3),
             "eval_samples_per_s": round(result.samples_per_s, 3)}
    if is_main_process():
        print(json.dumps(stats))
        name = os.path.splitext(os.path.basename(args.eval_model))[0]
        log = os.path.join(args.output_dir, f"eval_{args.dataset}_{args.eval_set}_{name}_log.txt")
        append_log_line(log, str(args))
        append_log_line(log, json.dumps(stats))
        if args.save_predictions:
            write_jsonl(args.save_predictions, engine.prediction_rows(result, dataset, args.imsize))
            print(f"| predictions written to {args.save_predictions}")
    return stats


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]`` (tests call this in-process)."""
    return run_distributed("eval", run, argv)


if __name__ == "__main__":
    run_cli(main)
