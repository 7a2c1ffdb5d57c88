"""The picture of ``inference.py --attention`` (and the web page): the image with the predicted box, [REG]'s
attention over the image patches as a heatmap on the image, and its weights over the query's words."""
from __future__ import annotations

import io
from typing import List, Sequence, Tuple

import torch
from PIL import Image


def patch_extent(transform: torch.Tensor, imsize: int) -> Tuple[float, float, float, float]:
    """Where the padded input canvas (``imsize`` square) lies in original-image pixels, as matplotlib's
    ``extent`` (left, right, bottom, top); ``transform`` is the eval transform's ``[scale, pad_x, pad_y, 0]``."""
    scale, pad_x, pad_y = (float(v) for v in transform[:3])
    return (-pad_x / scale, (imsize - pad_x) / scale, (imsize - pad_y) / scale, -pad_y / scale)


def attention_png(image: Image.Image, box_xyxy: Sequence[float], query: str, patches: torch.Tensor,
                  words: List[Tuple[str, float]], transform: torch.Tensor, imsize: int, layer_name: str) -> bytes:
    """PNG bytes of the three panels: box, patch heatmap (``patches`` (grid, grid), over the canvas) with the box,
    word weights (``words``: (word, weight) in order)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(11, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.1]})
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    width, height = image.size
    for ax, title in zip(axes[:2], ("prediction", f"[REG] attention over patches\n(fusion {layer_name})")):
        ax.imshow(image)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=2))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    heat = axes[1].imshow(patches.numpy(), cmap="inferno", alpha=0.6, interpolation="nearest",
                          extent=patch_extent(transform, imsize))
    fig.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.02)
    labels = [w for w, _ in words]
    values = [v for _, v in words]
    axes[2].barh(range(len(values)), values, color="#3b6fb6")
    axes[2].set_yticks(range(len(values)), labels, fontsize=8)
    axes[2].invert_yaxis()
    axes[2].set_xlabel("attention weight")
    axes[2].set_title("[REG] attention over the query's words", fontsize=9)
    fig.suptitle(f'"{query}"', fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
