"""Pseudo samples in the official split-file layouts (SPEC §2), and writing/reading pseudo split files.

* COCO-style sets (``unc``, ``unc+``, ``gref``, ``gref_umd``, ``synthetic``):
  ``(image_file, extra, [x, y, w, h], phrase, extra2)``
* ``referit``: ``(image_file, extra, [x1, y1, x2, y2], phrase, extra2)``
* ``flickr``: ``(image_file, [x1, y1, x2, y2], phrase)``

The extras of a pseudo sample are ``'useless placeholder'`` unless given. Boxes are plain Python floats. The
training code truncates every stored coordinate with ``int()`` (so ``x2 = int(x) + int(w)`` for xywh sets);
``is_trainable_box`` tells whether a box survives that with a positive area, and the generators drop (and count)
boxes that would not.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from pseudo_label_generation_module._io import load_sample_list
from utils.errors import InputError, UsageError
from utils.io import atomic_torch_save

PLACEHOLDER = "useless placeholder"

XYWH_DATASETS = ("unc", "unc+", "gref", "gref_umd", "synthetic")
XYXY_DATASETS = ("referit", "flickr")
DATASETS = XYWH_DATASETS + XYXY_DATASETS


def check_dataset(dataset: str) -> None:
    """Raise ValueError listing the valid names when ``dataset`` is unknown."""
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")


def sample_length(dataset: str) -> int:
    """Number of fields of one sample tuple of ``dataset``."""
    check_dataset(dataset)
    return 3 if dataset == "flickr" else 5


def box_field(dataset: str) -> int:
    """Position of the box in a sample tuple of ``dataset``."""
    check_dataset(dataset)
    return 1 if dataset == "flickr" else 2


def phrase_field(dataset: str) -> int:
    """Position of the phrase in a sample tuple of ``dataset``."""
    check_dataset(dataset)
    return 2 if dataset == "flickr" else 3


def stored_box(dataset: str, box_xyxy: Sequence[float]) -> List[float]:
    """``box_xyxy`` in ``dataset``'s stored convention (xywh for COCO-style sets, xyxy otherwise), rounded to
    1e-4 px so that ``x2 - x1`` carries no floating-point noise."""
    check_dataset(dataset)
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    box = [x1, y1, x2 - x1, y2 - y1] if dataset in XYWH_DATASETS else [x1, y1, x2, y2]
    return [round(v, 4) for v in box]


def sample_box_xyxy(sample: Sequence[Any], dataset: str) -> Tuple[float, float, float, float]:
    """The ``[x1, y1, x2, y2]`` box of a sample of ``dataset`` (no ``int()`` truncation)."""
    a, b, c, d = (float(v) for v in sample[box_field(dataset)])
    return (a, b, a + c, b + d) if dataset in XYWH_DATASETS else (a, b, c, d)


def is_trainable_box(dataset: str, box_xyxy: Sequence[float]) -> bool:
    """True when the stored box keeps a positive area after the training code's ``int()`` truncation."""
    a, b, c, d = (int(v) for v in stored_box(dataset, box_xyxy))
    if dataset in XYWH_DATASETS:
        return c > 0 and d > 0
    return c > a and d > b


def make_sample(dataset: str, image: str, box_xyxy: Sequence[float], phrase: str,
                extra: Optional[Any] = None, extra2: Optional[Any] = None) -> Tuple[Any, ...]:
    """One pseudo sample of ``dataset`` in its official tuple layout.

    ``box_xyxy`` is ``[x1, y1, x2, y2]`` in original-image pixels; ``extra``/``extra2`` default to
    ``'useless placeholder'`` and do not exist for ``flickr`` (passing them raises ValueError).
    """
    check_dataset(dataset)
    if not isinstance(image, str) or not image:
        raise InputError(f"image must be a non-empty file name, got {image!r}")
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError(f"phrase must be a non-empty string, got {phrase!r} (image {image})")
    if len(box_xyxy) != 4:
        raise InputError(f"box must have 4 numbers, got {list(box_xyxy)!r} (image {image})")
    box = stored_box(dataset, box_xyxy)
    if dataset == "flickr":
        if extra is not None or extra2 is not None:
            raise InputError("flickr samples have no extra fields: (image_file, box, phrase)")
        return (image, box, phrase)
    return (image, PLACEHOLDER if extra is None else extra, box, phrase, PLACEHOLDER if extra2 is None else extra2)


def save_samples(samples: Sequence[Tuple[Any, ...]], path: str) -> str:
    """Atomically ``torch.save`` the sample list to ``path``."""
    return atomic_torch_save(list(samples), path)


def load_samples(path: str, dataset: str) -> List[Tuple[Any, ...]]:
    """A pseudo split file of ``dataset``; every sample is checked for the layout's length, a string image and
    phrase, and a 4-number box (errors name the file and the sample index)."""
    samples = load_sample_list(path)
    n = sample_length(dataset)
    bi, pi = box_field(dataset), phrase_field(dataset)
    for index, sample in enumerate(samples):
        if not isinstance(sample, (tuple, list)) or len(sample) != n:
            raise InputError(f"{path}: sample {index}: expected a {n}-field {dataset} sample, got {sample!r}")
        box = sample[bi]
        if (not isinstance(sample[0], str) or not isinstance(sample[pi], str)
                or not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(isinstance(v, (int, float)) for v in box)):
            raise InputError(f"{path}: sample {index}: malformed {dataset} sample {sample!r}")
    return samples
