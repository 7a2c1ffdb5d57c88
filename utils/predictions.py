"""Per-sample prediction files (``eval.py --save_predictions``: one JSON line per sample with ``index``,
``pred_xyxy`` in original pixels and ``iou`` with the target) and paired comparisons of two such files on the same
samples: McNemar's exact test on the samples only one of them gets right, and how far their boxes lie apart."""
from __future__ import annotations

import json
from typing import Any, Dict

import torch
from torchvision.ops import box_iou

ACCURACY_IOU = 0.5
"""A prediction is correct (accuracy@0.5, the grounding metric) when its IoU with the target is at least this."""


def read_predictions(path: str) -> Dict[int, Dict[str, Any]]:
    """The rows of a predictions file, by sample index."""
    with open(path, encoding="utf-8") as fh:
        return {row["index"]: row for row in map(json.loads, fh)}


def _same_samples(a: Dict[int, Any], b: Dict[int, Any], path_a: str, path_b: str) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"{path_a} and {path_b} do not hold the same samples")


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided p-value of McNemar's exact test: how likely a split of the discordant samples at least this uneven
    is when two models are equally accurate (``only_a`` of ``only_a + only_b`` under Binomial(n, 1/2)); 1.0 when
    no sample is discordant."""
    # imported here, not at the top: scipy.stats takes half a second to import
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


def paired_comparison(model_predictions: str, baseline_predictions: str) -> Dict[str, Any]:
    """Two models' predictions files on the same samples: the samples only the model gets right (IoU >=
    ``ACCURACY_IOU``), those only the baseline gets right, and McNemar's exact p-value of that difference."""
    model_rows, baseline_rows = read_predictions(model_predictions), read_predictions(baseline_predictions)
    _same_samples(model_rows, baseline_rows, model_predictions, baseline_predictions)
    model_hits = {i: row["iou"] >= ACCURACY_IOU for i, row in model_rows.items()}
    baseline_hits = {i: row["iou"] >= ACCURACY_IOU for i, row in baseline_rows.items()}
    only_model = sum(hit and not baseline_hits[i] for i, hit in model_hits.items())
    only_baseline = sum(hit and not model_hits[i] for i, hit in baseline_hits.items())
    return {"only_model": only_model, "only_baseline": only_baseline,
            "p_value": mcnemar_exact_p(only_model, only_baseline)}


def box_agreement(predictions: str, reference_predictions: str) -> Dict[str, Any]:
    """How far the boxes of ``predictions`` lie from those of ``reference_predictions`` on the same samples (the
    same model under two numerics, say): the largest and mean absolute coordinate difference in pixels, the
    smallest and mean IoU between the two boxes of a sample, and the accuracy@0.5 change in points
    (``paired_comparison``'s counts and p-value included)."""
    rows, reference = read_predictions(predictions), read_predictions(reference_predictions)
    _same_samples(rows, reference, predictions, reference_predictions)
    order = sorted(rows)
    boxes = torch.tensor([rows[i]["pred_xyxy"] for i in order], dtype=torch.float64)
    reference_boxes = torch.tensor([reference[i]["pred_xyxy"] for i in order], dtype=torch.float64)
    diff = (boxes - reference_boxes).abs()
    overlap = box_iou(boxes, reference_boxes).diagonal()
    paired = paired_comparison(predictions, reference_predictions)
    n = len(order)
    return {"samples": n,
            "max_abs_box_diff_px": float(diff.max()) if n else 0.0,
            "mean_abs_box_diff_px": float(diff.mean()) if n else 0.0,
            "min_iou_with_reference_box": float(overlap.min()) if n else 1.0,
            "mean_iou_with_reference_box": float(overlap.mean()) if n else 1.0,
            "accuracy_change_points": 100.0 * (paired["only_model"] - paired["only_baseline"]) / n if n else 0.0,
            "correct_only_here": paired["only_model"], "correct_only_in_reference": paired["only_baseline"],
            "mcnemar_p": paired["p_value"]}
