"""Box conversions and overlaps (one place for all of them).

Pairwise IoU/GIoU come from ``torchvision.ops``; the element-wise IoU used by accuracy and reliability is here.

Boxes and their image (``clip_xyxy``, ``box_placement``): a pixel box ``(x1, y1, x2, y2)`` is *inside* a
``width`` x ``height`` image when it lies within ``[0, width] x [0, height]``; *clipped* when part of it sticks out
but the part inside has an area (the box is then used clipped to the image); *outside* when nothing with an area is
left after clipping (it lies wholly beyond the image, or only touches its border): such a box is unusable.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torchvision.ops import box_convert


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "xyxy", "cxcywh")


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "xywh", "xyxy")


def elementwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[i]`` with ``b[i]`` for xyxy boxes of shape (N, 4); 0 where the union is empty."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def clip_xyxy(box: Sequence[float], width: float, height: float) -> Tuple[float, float, float, float]:
    """The pixel box ``(x1, y1, x2, y2)`` clipped to the image ``[0, width] x [0, height]`` (plain floats)."""
    return (float(min(max(box[0], 0.0), width)), float(min(max(box[1], 0.0), height)),
            float(min(max(box[2], 0.0), width)), float(min(max(box[3], 0.0), height)))


def box_placement(box: Sequence[float], width: float, height: float) -> str:
    """``'inside'``, ``'clipped'`` or ``'outside'`` the ``width`` x ``height`` image (module docstring)."""
    x1, y1, x2, y2 = clip_xyxy(box, width, height)
    if x2 <= x1 or y2 <= y1:
        return "outside"
    return "inside" if (x1, y1, x2, y2) == tuple(float(v) for v in box) else "clipped"
