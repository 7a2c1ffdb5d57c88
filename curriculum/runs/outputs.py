"""Reading a run folder: its record ``run.json`` and what its script left in ``output/`` (a training run's
``log.txt`` and best checkpoint, a scoring run's per-sample reliabilities and summary)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from utils.run_setup import logged_epochs

RUN_RECORD = "run.json"


def read_record(run_dir: str) -> Optional[Dict[str, Any]]:
    """The run record of ``run_dir``, or None when it has none."""
    path = os.path.join(run_dir, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def train_result(output_dir: str, epochs: int) -> Optional[Dict[str, Any]]:
    """The result of a finished training run (best ``val_accu`` over the logged epochs), or None while the log
    does not reach the final epoch ``epochs - 1`` or the best checkpoint is missing."""
    log_txt = os.path.join(output_dir, "log.txt")
    best_ckpt = os.path.join(output_dir, "best_checkpoint.pth")
    if not os.path.isfile(log_txt) or not os.path.isfile(best_ckpt):
        return None
    rows = logged_epochs(log_txt)
    if not rows or max(int(r["epoch"]) for r in rows) < epochs - 1:
        return None
    best = max(rows, key=lambda r: float(r["val_accu"]))
    return {"val_accu": float(best["val_accu"]), "val_miou": best.get("val_miou"), "best_epoch": int(best["epoch"]),
            "epochs": epochs, "epochs_logged": len(rows), "best_checkpoint": best_ckpt,
            "checkpoint": os.path.join(output_dir, "checkpoint.pth"), "log_txt": log_txt}


def score_result(output_dir: str, dataset: str, split: str) -> Optional[Dict[str, Any]]:
    """The result of a finished scoring run (the summary is written last), or None."""
    stem = os.path.join(output_dir, f"{dataset}_{split}_reliability")
    jsonl, summary_path = f"{stem}.jsonl", f"{stem}_summary.json"
    if not os.path.isfile(jsonl) or not os.path.isfile(summary_path):
        return None
    with open(summary_path) as fh:
        summary = json.load(fh)
    keep = ("n", "mean", "quantiles", "share_above_0_5", "share_at_least_0_5", "count_zero", "count_one",
            "histogram_json", "histogram_png")
    return {"reliability_file": jsonl, "summary_file": summary_path, **{k: summary.get(k) for k in keep}}
