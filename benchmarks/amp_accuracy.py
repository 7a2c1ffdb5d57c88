"""How far bf16 autocast moves a trained model from fp32: each model evaluated on each split twice (``eval.py
--amp off`` and ``--amp bf16``), the per-sample predictions compared, one JSON object on stdout.

Per model and split: both accuracies@0.5, the change in points, the samples correct under only one of the two
(with McNemar's exact p-value), the largest and mean box coordinate difference in pixels, and the smallest and mean
IoU between a sample's two boxes (``utils/predictions.py box_agreement``).

    python benchmarks/amp_accuracy.py --demo demo_out                # the demo's four models on val, testA, testB
    python benchmarks/amp_accuracy.py --eval_model CKPT [--eval_model CKPT2 ...] --dataset unc \
        --eval_set val testA --data_root DATA --split_root SPLITS
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import eval as eval_script
from benchmarks._common import emit_from_work_dir, environment, positive_int, resolve_device, set_threads
from datasets import DataCache
from utils.cli import run_cli
from utils.errors import InputError, UsageError
from utils.predictions import box_agreement

DEMO_SPLITS = ("val", "testA", "testB")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/amp_accuracy.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--demo", default=None, metavar="DIR",
                   help="a finished demo's --output_dir: its four compared models, data and splits")
    p.add_argument("--eval_model", action="append", default=[], metavar="CKPT",
                   help="a checkpoint to compare (repeat for several)")
    p.add_argument("--dataset", default=None, help="data set name (with --eval_model)")
    p.add_argument("--eval_set", nargs="+", default=None, help="splits to evaluate (with --demo: val testA testB)")
    p.add_argument("--data_root", default=None)
    p.add_argument("--split_root", default=None)
    p.add_argument("--amp", default="bf16", choices=["bf16", "fp16"],
                   help="the autocast dtype compared with fp32 (fp16 needs CUDA)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--batch_size", type=positive_int, default=64)
    p.add_argument("--work_dir", default=None,
                   help="where the prediction files go (kept; default: a temporary folder, removed)")
    return p


def demo_models(demo_dir: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The demo's compared models (name -> checkpoint, ``demo.pipeline.compared_checkpoints``) and its
    ``--dataset/--data_root/--split_root``."""
    from demo.pipeline import compared_checkpoints
    from demo.synthetic import DATASET
    if not os.path.isdir(demo_dir):
        raise InputError(f"--demo {demo_dir}: no such folder (a finished demo's --output_dir)")
    data = {"dataset": DATASET, "data_root": os.path.join(demo_dir, "data"),
            "split_root": os.path.join(demo_dir, "splits")}
    return compared_checkpoints(demo_dir), data


def _models_and_data(args: argparse.Namespace) -> Tuple[Dict[str, str], Dict[str, str], List[str]]:
    if bool(args.demo) == bool(args.eval_model):
        raise UsageError("give either --demo DIR or --eval_model CKPT (with --dataset, --eval_set, --data_root, "
                         "--split_root)")
    if args.demo:
        given = [flag for flag in ("dataset", "data_root", "split_root") if getattr(args, flag)]
        if given:
            raise UsageError(f"--demo takes the demo's own data: drop --{', --'.join(given)}")
        models, data = demo_models(args.demo)
        return models, data, list(args.eval_set or DEMO_SPLITS)
    missing = [flag for flag in ("dataset", "eval_set", "data_root", "split_root") if not getattr(args, flag)]
    if missing:
        raise UsageError(f"--eval_model needs --{', --'.join(missing)}")
    models = {path: path for path in args.eval_model}
    data = {"dataset": args.dataset, "data_root": args.data_root, "split_root": args.split_root}
    return models, data, list(args.eval_set)


def _evaluate(checkpoint: str, split: str, amp: str, data: Dict[str, str], predictions: str,
              args: argparse.Namespace, cache: DataCache) -> None:
    """``eval.py`` in this process, its report on stderr (stdout carries only this script's JSON)."""
    with contextlib.redirect_stdout(sys.stderr):
        eval_script.main(["--eval_model", checkpoint, "--eval_set", split, "--amp", amp, "--device", args.device,
                          "--num_workers", "0", "--batch_size", str(args.batch_size),
                          "--output_dir", os.path.dirname(predictions), "--save_predictions", predictions,
                          *(f"--{key}={value}" for key, value in data.items())], data_cache=cache)


def compare(args: argparse.Namespace, work_dir: str) -> Dict[str, Any]:
    """Every model on every split under fp32 and ``--amp``: ``box_agreement`` of the two prediction files."""
    models, data, splits = _models_and_data(args)
    for name, checkpoint in models.items():
        if not os.path.isfile(checkpoint):
            raise InputError(f"{name}: checkpoint {checkpoint} not found")
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    cache = DataCache()
    results: Dict[str, Dict[str, Any]] = {}
    for index, (name, checkpoint) in enumerate(models.items()):
        results[name] = {}
        for split in splits:
            files = {amp: os.path.join(work_dir, f"model{index}", amp, f"{split}.jsonl") for amp in ("off", args.amp)}
            for amp, path in files.items():
                _evaluate(checkpoint, split, amp, data, path, args, cache)
            results[name][split] = box_agreement(files[args.amp], files["off"])
    cells = [cell for per_split in results.values() for cell in per_split.values()]
    samples = sum(c["samples"] for c in cells)
    flipped = sum(c["correct_only_here"] + c["correct_only_in_reference"] for c in cells)
    return {"benchmark": "amp_accuracy", "amp": args.amp, "device": str(device), "threads": threads,
            "models": models, **data, "splits": splits, "results": results,
            "summary": {"samples": samples,
                        "largest_accuracy_change_points": max((abs(c["accuracy_change_points"]) for c in cells),
                                                              default=0.0),
                        "flipped_samples": flipped,
                        "flipped_share": flipped / samples if samples else 0.0,
                        "max_abs_box_diff_px": max((c["max_abs_box_diff_px"] for c in cells), default=0.0),
                        "min_iou_with_fp32_box": min((c["min_iou_with_reference_box"] for c in cells), default=1.0)},
            "environment": environment(device)}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the comparison for ``argv`` (like ``sys.argv[1:]``), print and return the JSON object."""
    return emit_from_work_dir(compare, build_parser().parse_args(argv), "clipvg-amp-accuracy-")


if __name__ == "__main__":
    run_cli(main)
