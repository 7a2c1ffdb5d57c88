"""The grounding loss of CLIP-VG: L1 on (cx, cy, w, h) plus GIoU loss, weights 1 and 1
(docs/method.md#training-and-evaluation)."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from utils.box_ops import cxcywh_to_xyxy


def grounding_loss(pred_cxcywh: torch.Tensor, target_cxcywh: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``l1``: absolute error summed over the 4 coordinates, mean over the batch; ``giou``: mean of 1 - GIoU of
    the xyxy boxes; ``loss`` = l1 + giou. Inputs are (B, 4) boxes normalised to the padded input."""
    if pred_cxcywh.shape != target_cxcywh.shape or pred_cxcywh.shape[-1] != 4:
        raise ValueError(f"grounding_loss: expected two (B, 4) boxes, got {tuple(pred_cxcywh.shape)} and "
                         f"{tuple(target_cxcywh.shape)}")
    l1 = F.l1_loss(pred_cxcywh, target_cxcywh, reduction="none").sum(dim=1).mean()
    giou = generalized_box_iou_loss(cxcywh_to_xyxy(pred_cxcywh), cxcywh_to_xyxy(target_cxcywh), reduction="mean")
    return {"l1": l1, "giou": giou, "loss": l1 + giou}
