"""A throw-away RefCOCO-layout data set of COCO-sized synthetic JPEGs, for data-pipeline benchmarks.

Images are smooth colour fields with shapes and sensor-like noise, so their JPEG files are about as large (and
as slow to decode) as COCO photos; they go to ``{data_root}/other/images/mscoco/images/train2014`` and the split
files to ``{split_root}/unc/unc_{split}.pth`` in the official ``unc`` tuple layout.
"""
from __future__ import annotations

import io
import os
from typing import Dict, Iterable, List

import numpy as np
from PIL import Image, ImageDraw

from benchmarks._common import COCO_SIZES, QUERIES
from datasets.records import GroundingRecord, image_dir, record_to_tuple, split_path
from utils.io import atomic_torch_save, atomic_write_bytes

DATASET = "unc"
NOISE_STD = 14.0
"""Pixel noise (0-255 scale) that brings a 640x480 quality-90 JPEG to roughly COCO's file size."""


def render_image(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like RGB image: a smooth random colour field, a dozen filled shapes, Gaussian noise."""
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height),
                                                                                    Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noisy = np.asarray(field, dtype=np.float32) + rng.normal(0.0, NOISE_STD, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _records(names: List[str], sizes: List[tuple], count: int, rng: np.random.Generator) -> Iterable[GroundingRecord]:
    for i in range(count):
        k = i % len(names)
        w, h = sizes[k]
        bw, bh = int(rng.integers(w // 8, w // 2)), int(rng.integers(h // 8, h // 2))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        yield GroundingRecord(image=names[k], box_xyxy=(x, y, x + bw, y + bh), query=QUERIES[i % len(QUERIES)],
                              dataset=DATASET)


def write_jpeg_world(data_root: str, split_root: str, n_images: int, samples: Dict[str, int],
                     image_size: int = 640, quality: int = 90, seed: int = 0) -> Dict[str, float]:
    """Write ``n_images`` JPEGs (long side ``image_size``, COCO aspect ratios) and one split file per entry of
    ``samples`` (split -> sample count, several expressions per image); returns the mean file size in KiB."""
    rng = np.random.default_rng(seed)
    folder = image_dir(data_root, DATASET)
    names, sizes, total = [], [], 0
    for i in range(n_images):
        w0, h0 = COCO_SIZES[i % len(COCO_SIZES)]
        scale = image_size / max(w0, h0)
        size = (max(16, round(w0 * scale)), max(16, round(h0 * scale)))
        buf = io.BytesIO()
        render_image(*size, rng).save(buf, "JPEG", quality=quality)
        names.append(f"COCO_train2014_{i + 1:012d}.jpg")
        sizes.append(size)
        total += buf.tell()
        atomic_write_bytes(os.path.join(folder, names[-1]), buf.getvalue())
    for split, count in samples.items():
        rows = [record_to_tuple(r) for r in _records(names, sizes, count, rng)]
        atomic_torch_save(rows, split_path(split_root, DATASET, split))
    return {"mean_jpeg_kib": round(total / max(n_images, 1) / 1024, 1)}
