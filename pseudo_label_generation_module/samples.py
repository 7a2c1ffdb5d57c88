"""Pseudo samples in the official split-file layouts, which ``datasets.records`` defines (``LAYOUTS``).

The extras of a pseudo sample are ``'useless placeholder'`` unless given. Boxes are plain Python floats. The
training code truncates every stored coordinate with ``int()`` (so ``x2 = int(x) + int(w)`` for xywh sets);
``is_trainable_box`` tells whether a box survives that with a positive area, and the generators drop (and count)
boxes that would not. Pseudo split files are read with ``datasets.records.load_split_file(path, dataset)``.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from datasets.records import LAYOUTS, PLACEHOLDER, check_dataset_name
from utils.errors import InputError
from utils.io import atomic_torch_save


def _is_xywh(dataset: str) -> bool:
    check_dataset_name(dataset)
    return LAYOUTS[dataset].box_format == "xywh"


def stored_box(dataset: str, box_xyxy: Sequence[float]) -> List[float]:
    """``box_xyxy`` in ``dataset``'s stored convention (xywh for COCO-style sets, xyxy otherwise), rounded to
    1e-4 px so that ``x2 - x1`` carries no floating-point noise."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    box = [x1, y1, x2 - x1, y2 - y1] if _is_xywh(dataset) else [x1, y1, x2, y2]
    return [round(v, 4) for v in box]


def sample_box_xyxy(sample: Sequence[Any], dataset: str) -> Tuple[float, float, float, float]:
    """The ``[x1, y1, x2, y2]`` box of a sample of ``dataset`` (no ``int()`` truncation)."""
    xywh = _is_xywh(dataset)
    a, b, c, d = (float(v) for v in sample[LAYOUTS[dataset].box_field])
    return (a, b, a + c, b + d) if xywh else (a, b, c, d)


def is_trainable_box(dataset: str, box_xyxy: Sequence[float]) -> bool:
    """True when the stored box keeps a positive area after the training code's ``int()`` truncation."""
    a, b, c, d = (int(v) for v in stored_box(dataset, box_xyxy))
    if _is_xywh(dataset):
        return c > 0 and d > 0
    return c > a and d > b


def make_sample(dataset: str, image: str, box_xyxy: Sequence[float], phrase: str,
                extra: Optional[Any] = None, extra2: Optional[Any] = None) -> Tuple[Any, ...]:
    """One pseudo sample of ``dataset`` in its official tuple layout.

    ``box_xyxy`` is ``[x1, y1, x2, y2]`` in original-image pixels; ``extra``/``extra2`` default to
    ``'useless placeholder'`` and do not exist for ``flickr`` (passing them raises ValueError).
    """
    check_dataset_name(dataset)
    if not isinstance(image, str) or not image:
        raise InputError(f"image must be a non-empty file name, got {image!r}")
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError(f"phrase must be a non-empty string, got {phrase!r} (image {image})")
    if len(box_xyxy) != 4:
        raise InputError(f"box must have 4 numbers, got {list(box_xyxy)!r} (image {image})")
    box = stored_box(dataset, box_xyxy)
    if "extra" not in LAYOUTS[dataset].fields:
        if extra is not None or extra2 is not None:
            raise InputError("flickr samples have no extra fields: (image_file, box, phrase)")
        return (image, box, phrase)
    return (image, PLACEHOLDER if extra is None else extra, box, phrase, PLACEHOLDER if extra2 is None else extra2)


def save_samples(samples: Sequence[Tuple[Any, ...]], path: str) -> str:
    """Atomically ``torch.save`` the sample list to ``path``."""
    return atomic_torch_save(list(samples), path)
