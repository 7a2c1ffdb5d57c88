"""Box geometry for the pseudo-label rules; boxes are ``(x1, y1, x2, y2)`` pixel tuples.

Pairwise overlaps come from ``torchvision.ops`` (in float64, so thresholds compare exactly).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torchvision.ops import box_iou

from utils.box_ops import clip_xyxy as clip  # noqa: F401  (the rules' name for it: the box clipped to the image)

Box = Tuple[float, float, float, float]


def _tensor(boxes: Sequence[Box]) -> torch.Tensor:
    return torch.tensor([list(b) for b in boxes], dtype=torch.float64).reshape(-1, 4)


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> torch.Tensor:
    """(len(a), len(b)) IoU matrix (0 where a box has no area)."""
    return box_iou(_tensor(a), _tensor(b)).nan_to_num(0.0)


def paired_iou(a: Sequence[Box], b: Sequence[Box]) -> List[float]:
    """IoU of ``a[k]`` with ``b[k]`` for every k (the diagonal of ``iou_matrix``, in one call)."""
    return iou_matrix(a, b).diagonal().tolist() if a else []


def area(box: Box) -> float:
    """Area of a box (0 for an inverted one)."""
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def inside_fraction(inner: Box, outer: Box) -> float:
    """Fraction of ``inner``'s area that lies inside ``outer`` (0 when ``inner`` has no area)."""
    inner_area = area(inner)
    if inner_area <= 0:
        return 0.0
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    return max(w, 0.0) * max(h, 0.0) / inner_area


def center(box: Box) -> Tuple[float, float]:
    """Centre ``(cx, cy)`` of a box."""
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
