"""Grounding samples as typed records, and the official split-file layouts.

The official tuple layouts exist only here (the pseudo-label module and the curriculum use them from here), and
``load_split_file`` is the one reader of split files:

* ``flickr``: ``(image_file, box, phrase)``
* every other dataset: ``(image_file, extra, box, phrase, extra2)`` (the extras are ids, mask files, attribute
  lists or ``'useless placeholder'``; they are kept untouched in ``GroundingRecord.source``).

COCO-based sets (``unc``, ``unc+``, ``gref``, ``gref_umd``) and ``synthetic`` store ``[x, y, w, h]``; ``referit``
and ``flickr`` store ``[x1, y1, x2, y2]``. As the reference does, every coordinate is truncated with ``int()``
before conversion, so ``x2 = int(x) + int(w)`` (not ``int(x + w)``).

Split files are ``{split_root}/{dataset}/{dataset}_{split}.pth``, loaded as safely as ``torch.load(weights_only=True)``.
``trainval`` is ``train`` followed by ``val`` for every dataset except ``referit``, which has its own file; a
record's ``index`` is its position in that (concatenated) list.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from utils.errors import InputError, UsageError
from utils.io import torch_load_plain

BoxXYXY = Tuple[float, float, float, float]

_REFCOCO_SPLITS = ("train", "val", "trainval", "testA", "testB", "train_pseudo")

DATASETS = {
    "referit": ("train", "val", "trainval", "test", "train_pseudo"),
    "unc": _REFCOCO_SPLITS,
    "unc+": _REFCOCO_SPLITS,
    "gref": ("train", "val", "train_pseudo"),
    "gref_umd": ("train", "val", "test", "train_pseudo"),
    "flickr": ("train", "val", "test", "train_pseudo"),
    "synthetic": _REFCOCO_SPLITS,
}
"""Dataset name -> its splits (those of the official release, plus the synthetic world)."""

TRAIN_SPLITS = ("train", "train_pseudo")
"""Splits that get the train transforms by default."""

_COCO_IMAGES = os.path.join("other", "images", "mscoco", "images", "train2014")
IMAGE_DIRS = {
    "referit": os.path.join("referit", "images"),
    "unc": _COCO_IMAGES,
    "unc+": _COCO_IMAGES,
    "gref": _COCO_IMAGES,
    "gref_umd": _COCO_IMAGES,
    "flickr": os.path.join("Flickr30k", "flickr30k-images"),
    "synthetic": os.path.join("synthetic", "images"),
}
"""Dataset name -> image folder relative to ``--data_root``."""

PLACEHOLDER = "useless placeholder"
"""Extra field written for records that have no source tuple (new samples, e.g. pseudo labels)."""


@dataclass(frozen=True)
class Layout:
    """Where the fields of one dataset's sample tuple are."""
    fields: Tuple[str, ...]
    box_format: str  # "xywh" or "xyxy"

    @property
    def box_field(self) -> int:
        return self.fields.index("box")

    @property
    def query_field(self) -> int:
        return self.fields.index("phrase")

    @property
    def width(self) -> int:
        """Number of fields of a sample tuple."""
        return len(self.fields)

    def describe(self) -> str:
        box = "[x, y, w, h]" if self.box_format == "xywh" else "[x1, y1, x2, y2]"
        return f"({', '.join(self.fields)}) with box {box}"


_FIVE = ("image_file", "extra", "box", "phrase", "extra2")
LAYOUTS = {
    "referit": Layout(_FIVE, "xyxy"),
    "unc": Layout(_FIVE, "xywh"),
    "unc+": Layout(_FIVE, "xywh"),
    "gref": Layout(_FIVE, "xywh"),
    "gref_umd": Layout(_FIVE, "xywh"),
    "flickr": Layout(("image_file", "box", "phrase"), "xyxy"),
    "synthetic": Layout(_FIVE, "xywh"),
}


class BadSampleError(InputError):
    """A sample tuple that cannot be used; ``index`` is its position in the split file."""

    def __init__(self, index: int, reason: str, dataset: Optional[str] = None):
        self.index, self.reason, self.dataset = index, reason, dataset
        where = f"{dataset} sample {index}" if dataset else f"sample {index}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class GroundingRecord:
    """One grounding sample inside the code.

    ``image``: file name relative to the dataset's image folder; ``box_xyxy``: pixel box after the official
    ``int()`` truncation; ``query``: the raw expression as in the file (no prompt, original case); ``source``:
    the original tuple (None for a new sample), kept so that writing the record back gives it unchanged;
    ``dataset``: the dataset name; ``index``: position in the split file (-1 for a new sample).
    """
    image: str
    box_xyxy: BoxXYXY
    query: str
    source: Optional[Sequence[Any]] = None
    dataset: str = ""
    index: int = -1


def check_dataset_name(dataset: str) -> None:
    """Raise ValueError listing the valid names when ``dataset`` is unknown."""
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")


def check_split_name(dataset: str, split: str) -> None:
    """Raise ValueError listing ``dataset``'s splits when ``split`` is not one of them."""
    check_dataset_name(dataset)
    if split not in DATASETS[dataset]:
        raise UsageError(f"dataset {dataset!r} has no split {split!r}; valid splits: {', '.join(DATASETS[dataset])}")


def _box_values(raw: Any, index: int, dataset: str) -> List[float]:
    if isinstance(raw, (str, bytes)):
        raise BadSampleError(index, f"box must be 4 numbers, got the string {raw!r}", dataset)
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError) as e:
        raise BadSampleError(index, f"box must be 4 numbers, got {raw!r} ({e})", dataset) from None
    if len(values) != 4:
        raise BadSampleError(index, f"box must have 4 numbers, got {len(values)}: {raw!r}", dataset)
    if not all(math.isfinite(v) for v in values):
        raise BadSampleError(index, f"box has a non-finite value: {raw!r}", dataset)
    return values


def _to_xyxy(values: Sequence[float], box_format: str) -> BoxXYXY:
    """The reference's conversion: int() truncation of each stored coordinate, then xywh -> xyxy."""
    a, b, c, d = (float(int(v)) for v in values)
    return (a, b, a + c, b + d) if box_format == "xywh" else (a, b, c, d)


def _from_xyxy(box: Sequence[float], box_format: str) -> List[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1] if box_format == "xywh" else [x1, y1, x2, y2]


def tuple_to_record(sample: Any, dataset: str, index: int) -> GroundingRecord:
    """Validate one split-file sample of ``dataset`` and return its record.

    Raises ``BadSampleError`` (naming ``index`` and the reason) for a malformed tuple, a non-string image or
    query, an empty query, a non-finite box, or a box of zero (or negative) area after conversion.
    """
    check_dataset_name(dataset)
    layout = LAYOUTS[dataset]
    if not isinstance(sample, (tuple, list)):
        raise BadSampleError(index, f"expected a tuple {layout.describe()}, got {type(sample).__name__}", dataset)
    if len(sample) != len(layout.fields):
        raise BadSampleError(index, f"expected {len(layout.fields)} fields {layout.describe()}, got {len(sample)}",
                             dataset)
    image = sample[0]
    if not isinstance(image, str) or not image.strip():
        raise BadSampleError(index, f"image file name must be a non-empty string, got {image!r}", dataset)
    query = sample[layout.query_field]
    if not isinstance(query, str):
        raise BadSampleError(index, f"query must be a string, got {type(query).__name__}", dataset)
    if not query.strip():
        raise BadSampleError(index, "empty query", dataset)
    raw_box = sample[layout.box_field]
    box = _to_xyxy(_box_values(raw_box, index, dataset), layout.box_format)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise BadSampleError(index, f"box {raw_box!r} ({layout.box_format}) has zero area after int() truncation: "
                                    f"xyxy {list(box)}", dataset)
    return GroundingRecord(image=image, box_xyxy=box, query=query, source=sample, dataset=dataset, index=index)


def record_to_tuple(record: GroundingRecord, dataset: Optional[str] = None) -> Tuple[Any, ...] | List[Any]:
    """The record in ``dataset``'s official tuple layout (default: the record's own dataset).

    Fields the record does not change are taken from ``record.source``, so an unchanged record gives back its
    original tuple exactly (same box values and type, same extras). A changed box is written in the dataset's
    convention as floats; a record without a source gets ``PLACEHOLDER`` extras.
    """
    dataset = dataset or record.dataset
    check_dataset_name(dataset)
    layout = LAYOUTS[dataset]
    source = record.source
    if source is not None and isinstance(source, (tuple, list)) and len(source) == len(layout.fields):
        fields = list(source)
    else:
        fields = [PLACEHOLDER] * len(layout.fields)
        source = None
    if source is None or _source_box(source, layout) != tuple(record.box_xyxy):
        fields[layout.box_field] = _from_xyxy(record.box_xyxy, layout.box_format)
    fields[0] = record.image
    fields[layout.query_field] = record.query
    return fields if isinstance(source, list) else tuple(fields)


def _source_box(source: Sequence[Any], layout: Layout) -> Optional[BoxXYXY]:
    try:
        return _to_xyxy(_box_values(source[layout.box_field], -1, ""), layout.box_format)
    except BadSampleError:
        return None


def parse_records(samples: Sequence[Any], dataset: str) -> Tuple[List[GroundingRecord], List[BadSampleError]]:
    """Records of the valid samples (with their split positions) and the errors of the bad ones."""
    records, bad = [], []
    for index, sample in enumerate(samples):
        try:
            records.append(tuple_to_record(sample, dataset, index))
        except BadSampleError as e:
            bad.append(e)
    return records, bad


def split_path(split_root: str, dataset: str, split: str) -> str:
    """``{split_root}/{dataset}/{dataset}_{split}.pth``."""
    return os.path.join(split_root, dataset, f"{dataset}_{split}.pth")


def split_paths(split_root: str, dataset: str, split: str) -> List[str]:
    """The files that make up ``split`` (``trainval`` = train + val except for referit)."""
    check_split_name(dataset, split)
    if split == "trainval" and dataset != "referit":
        return [split_path(split_root, dataset, s) for s in ("train", "val")]
    return [split_path(split_root, dataset, split)]


def existing_splits(split_root: str, dataset: str) -> List[str]:
    """Split names of the ``{dataset}_*.pth`` files present in ``{split_root}/{dataset}``, sorted."""
    folder = os.path.join(split_root, dataset)
    if not os.path.isdir(folder):
        return []
    prefix = f"{dataset}_"
    return sorted(name[len(prefix):-len(".pth")] for name in os.listdir(folder)
                  if name.startswith(prefix) and name.endswith(".pth"))


def _missing_split_message(path: str, split_root: str, dataset: str) -> str:
    folder = os.path.join(split_root, dataset)
    if os.path.isdir(folder):
        found = existing_splits(split_root, dataset)
        return f"split file {path} not found; splits present in {folder}: {', '.join(found) or 'none'}"
    if os.path.isdir(split_root):
        present = sorted(d for d in os.listdir(split_root) if os.path.isdir(os.path.join(split_root, d)))
        return (f"split file {path} not found: there is no folder {folder} "
                f"(--split_root {split_root} holds: {', '.join(present) or 'nothing'})")
    return f"split file {path} not found: --split_root {split_root} does not exist"


def _looks_like_torch_save(path: str) -> bool:
    """Whether ``path`` starts like a torch.save file: a zip archive (torch's format) or a pickle (the legacy one)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK") or head[:1] == b"\x80"


def _reason(e: BaseException) -> str:
    """The one line of a loader's message that says what it refused (torch's weights-only errors span several)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return next((line for line in lines if "nsupported" in line), lines[0] if lines else "")


def load_split_file(path: str, dataset: Optional[str] = None, same_layout: bool = False) -> List[Any]:
    """A split file's sample list, loaded as safely as ``weights_only=True`` (``torch_load_plain``): the one reader of
    split files. A missing file, one that is not a torch.save'd list (a text file named .pth included) or one holding
    objects the safe loader refuses raises a one-line ``InputError`` naming it.

    Training and evaluation check samples one by one (``tuple_to_record``: a bad sample is skipped or named) and ask
    for nothing more. With ``dataset``, every sample must have that dataset's layout (``check_layout``); with
    ``same_layout``, all samples must share one layout, whichever it is."""
    if not os.path.isfile(path):
        raise InputError(f"split file {path} not found")
    if not _looks_like_torch_save(path):
        raise InputError(f"split file {path} is not a readable torch.save file (neither torch's zip format nor a "
                         "pickle)")
    try:
        data = torch_load_plain(path)
    except Exception as e:  # the safe loader's refusal, or any decoding failure of a damaged file
        reason = _reason(e)
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in reason:
            raise InputError(f"split file {path} holds objects that torch.load(weights_only=True) refuses "
                             f"(samples must be plain tuples/lists of str, numbers and lists): {reason}") from None
        raise InputError(f"split file {path} is not a readable torch.save file ({type(e).__name__}: {reason})"
                         ) from None
    if not isinstance(data, list):
        raise InputError(f"split file {path} must hold a list of samples, got {type(data).__name__}")
    if dataset is not None or same_layout:
        check_layout(data, path, dataset)
    return data


def check_layout(samples: Sequence[Any], where: str, dataset: Optional[str] = None) -> List[Any]:
    """Check the shape of every sample (not its values, see ``tuple_to_record``) and return them as a list: with
    ``dataset``, its field count, a string image and query and a 4-number box; without, tuples/lists of one common
    length. ``InputError`` naming ``where`` and the first bad sample."""
    if dataset is None:
        width = None
        for i, sample in enumerate(samples):
            if not isinstance(sample, (tuple, list)):
                raise InputError(f"{where}: sample {i} is a {type(sample).__name__}, expected a tuple")
            if width is None:
                width = len(sample)
            elif len(sample) != width:
                raise InputError(f"{where}: sample {i} has {len(sample)} fields but sample 0 has {width}: "
                                 "mixed tuple layouts")
        return list(samples)
    check_dataset_name(dataset)
    layout = LAYOUTS[dataset]
    for i, sample in enumerate(samples):
        if not isinstance(sample, (tuple, list)) or len(sample) != layout.width:
            raise InputError(f"{where}: sample {i}: expected a {layout.width}-field {dataset} sample, got {sample!r}")
        box = sample[layout.box_field]
        if (not isinstance(sample[0], str) or not isinstance(sample[layout.query_field], str)
                or not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(isinstance(v, (int, float)) for v in box)):
            raise InputError(f"{where}: sample {i}: malformed {dataset} sample {sample!r}")
    return list(samples)


def load_split(split_root: str, dataset: str, split: str) -> List[Any]:
    """All samples of ``split`` (concatenated for a composed ``trainval``), in file order."""
    samples: List[Any] = []
    for path in split_paths(split_root, dataset, split):
        if not os.path.isfile(path):
            raise InputError(_missing_split_message(path, split_root, dataset))
        samples += load_split_file(path)
    return samples


def image_dir(data_root: str, dataset: str) -> str:
    """The folder holding ``dataset``'s images."""
    check_dataset_name(dataset)
    return os.path.join(data_root, IMAGE_DIRS[dataset])
