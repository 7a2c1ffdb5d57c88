"""``GroundingDataset``: a split's records, their tokenised queries and the transform (docs/method.md#data).

Queries: the ``--prompt`` template is applied first (``{pseudo_query}`` replaced by the query; an empty prompt
means the query alone), then the text is lower-cased and tokenised once, at construction, with
``clip.tokenize(..., context_length=max_query_len, truncate=True)``. Longer queries are truncated and reported in
one line per dataset (count and first sample index).

Caching: the data set's ``DataCache`` (``datasets/cache.py``, given by whoever builds several data sets in one
process, else its own) holds the query tokens and, with ``cache_images``, the decoded images or transformed canvases;
with ``cache_images`` and a deterministic transform the data set also keeps each item it built (for its own life).

Items are dicts that ``torch.utils.data.default_collate`` batches::

    img (3, S, S) float32 | img_mask (S, S) bool, True = padding | text (Lq,) int64, 0 = padding
    box (4,) float32 (cx, cy, w, h) / S | index int, position in the split file | transform (4,) float32

Boxes and images are checked when an item is built (the image is opened then anyway; reading every image's size at
construction would be slow for large data sets), by the rule of ``utils.box_ops``: a box that sticks out of its
image is used clipped to it; a box with nothing left inside the image is unusable. Training (``skip_bad``) skips
such a sample: its place in the batch goes to the next usable sample of the split, and ``samples_outside_image``
lists the skipped ones; evaluation refuses it with ``BoxOutsideImageError`` naming the sample. An image that cannot
be read raises ``ImageLoadError`` naming the file and the sample. Both keep their one-line message when raised in a
DataLoader worker.
"""
from __future__ import annotations

import functools
import os
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from clip.simple_tokenizer import SimpleTokenizer
from PIL import Image
from torch.utils.data import Dataset

from datasets.cache import DataCache
from datasets.records import (BadSampleError, GroundingRecord, check_split_name, image_dir, load_split,
                              parse_records, split_paths)
from datasets.transforms import EvalTransform, Transformed, TrainTransform
from utils.box_ops import box_placement, clip_xyxy
from utils.errors import InputError
from utils.prompt import apply_prompt, check_prompt


def _original_message(message: str, cls: type) -> str:
    """The message an error of class ``cls`` was raised with, also when a DataLoader worker raised it: the loader
    re-raises it in the main process as ``cls("Caught <name> in DataLoader worker process N.\nOriginal Traceback
    ...")``, whose last line is ``<module>.<name>: <message>``."""
    if not message.startswith("Caught ") or "\nOriginal Traceback" not in message:
        return message
    last = message.rstrip().rsplit("\n", 1)[-1]
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


class SampleError(InputError):
    """A sample that cannot be used, found when its item is built; the one-line message names the sample (and
    survives a DataLoader worker: see ``_original_message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(_original_message(message, type(self)))


class ImageLoadError(SampleError):
    """A sample's image is missing or cannot be decoded (the message names the file and the sample index)."""


class BoxOutsideImageError(SampleError):
    """A sample's box lies outside its image: nothing with an area is left after clipping it to the image."""


@functools.lru_cache(maxsize=1)
def _bpe() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize_queries(texts: Sequence[str], context_length: int, cache: Optional[DataCache] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor, List[int]]:
    """Tokenise ``texts`` with ``clip.tokenize(..., truncate=True)``, each distinct text once (``cache.tokenize``;
    without a cache, a throw-away one).

    Returns ``(tokens, rows, long)``: ``tokens`` (U, context_length) int32 for the distinct texts, ``rows`` (N,)
    int64 with ``tokens[rows[i]]`` the ids of ``texts[i]``, and the positions ``i`` whose text was longer than
    the context (start and end tokens included) and got truncated.
    """
    position: Dict[str, int] = {}
    rows = torch.tensor([position.setdefault(t, len(position)) for t in texts], dtype=torch.int64)
    unique = list(position)
    tokens = (cache or DataCache()).tokenize(unique, context_length)
    # Only a text that fills the whole context can have been truncated; count its real length to be sure.
    full = torch.nonzero(tokens[:, -1] != 0).flatten().tolist()
    too_long = {u for u in full if len(_bpe().encode(unique[u])) + 2 > context_length}
    long = [i for i, u in enumerate(rows.tolist()) if u in too_long] if too_long else []
    return tokens, rows, long


def missing_images(records: Sequence[GroundingRecord], folder: str) -> List[Tuple[int, str]]:
    """``(first sample index, file)`` of every distinct image file of ``records`` absent from ``folder``."""
    first: Dict[str, int] = {}
    for record in records:
        first.setdefault(record.image, record.index)
    return [(index, name) for name, index in first.items() if not os.path.exists(os.path.join(folder, name))]


def load_image(path: str, index: int) -> Image.Image:
    """Open ``path`` with PIL as RGB; ``ImageLoadError`` naming the file and sample ``index`` on failure."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise ImageLoadError(f"sample {index}: image {path} does not exist") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"sample {index}: cannot read image {path}: {e}") from e


class GroundingDataset(Dataset):
    """One split of a grounding dataset (see the module docstring for the item layout).

    ``records`` holds the usable samples in split order, each with ``index`` = its position in the split file;
    ``records_by_index`` maps that position to the record. Bad samples (``BadSampleError``) are dropped with one
    printed line when ``skip_bad`` (training), and raise naming the first and the count otherwise (evaluation).
    Every distinct image file must exist: the constructor checks them all (``os.path.exists``) and raises
    ``InputError`` naming the first missing one.

    ``cache``: where the query tokens and, with ``cache_images``, the decoded images (augmenting transform) or the
    transformed canvases (deterministic transform) are kept; a fresh one of its own when not given.
    """

    def __init__(self, dataset: str, split: str, data_root: str, split_root: str,
                 transform: EvalTransform | TrainTransform, max_query_len: int = 77, prompt: Optional[str] = None,
                 skip_bad: bool = False, seed: int = 0, cache_images: bool = False,
                 cache: Optional[DataCache] = None):
        check_split_name(dataset, split)
        check_prompt(prompt)
        self.dataset, self.split, self.transform = dataset, split, transform
        self.seed, self.skip_bad = seed, skip_bad
        # Shared with DataLoader workers (persistent ones too), so set_epoch reaches them.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.image_dir = image_dir(data_root, dataset)
        self.cache = cache if cache is not None else DataCache()
        self._cache_images = cache_images
        # With cached canvases every item is deterministic too: built once per position (sharing the canvas's tensors).
        self._items: Optional[Dict[int, Dict[str, Any]]] = {} if cache_images and not transform.random else None
        files = ", ".join(split_paths(split_root, dataset, split))
        records, bad = parse_records(load_split(split_root, dataset, split), dataset)
        if bad and not skip_bad:
            raise BadSampleError(bad[0].index, f"{bad[0].reason} ({len(bad)} bad sample(s) in {files}; evaluation "
                                               "does not skip samples: fix the file, `python -m datasets.check` "
                                               "lists them)", dataset)
        if bad:
            print(f"| {dataset} {split}: skipped {len(bad)} bad sample(s) of {files} (first: {bad[0]})")
        self.records: List[GroundingRecord] = records
        self.records_by_index: Dict[int, GroundingRecord] = {r.index: r for r in records}
        # Positions whose box was found outside its image (training skips them); shared with DataLoader workers.
        self._outside = torch.zeros(len(records), dtype=torch.bool).share_memory_()
        self._check_images(data_root, split_root)
        self.texts = [apply_prompt(r.query, prompt) for r in records]
        self._tokens, self._rows, long = tokenize_queries(self.texts, max_query_len, self.cache)
        if long:
            print(f"| warning: {len(long)} {dataset} {split} quer{'y' if len(long) == 1 else 'ies'} longer than "
                  f"{max_query_len} tokens truncated (first: sample {records[long[0]].index})")

    def _check_images(self, data_root: str, split_root: str) -> None:
        missing = missing_images(self.records, self.image_dir)
        if missing:
            index, name = missing[0]
            raise InputError(
                f"{len(missing)} image file(s) of {self.dataset} {self.split} missing from {self.image_dir}; first: "
                f"{name} (sample {index}). List them all with: python -m datasets.check --dataset {self.dataset} "
                f"--data_root {data_root} --split_root {split_root}")

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before iterating, as with the sampler)."""
        self._epoch.fill_(epoch)

    def augmentation_rng(self, index: int) -> random.Random:
        """The random stream of one sample in the current epoch: a function of (seed, epoch, split index) only,
        so augmentation does not depend on the process count, the worker count or the batch order (resumed and
        N-process runs see the same augmented samples as an uninterrupted single-process run)."""
        return random.Random(f"{self.seed}/{int(self._epoch)}/{index}")

    def image_path(self, record: GroundingRecord) -> str:
        return os.path.join(self.image_dir, record.image)

    def load_image(self, record: GroundingRecord) -> Image.Image:
        """The RGB image of ``record`` (with ``cache_images``, decoded once: ``DataCache.image``)."""
        path = self.image_path(record)
        if not self._cache_images:
            return load_image(path, record.index)
        return self.cache.image(path, lambda p: load_image(p, record.index))

    def __len__(self) -> int:
        return len(self.records)

    def samples_outside_image(self) -> List[int]:
        """Split indices of the samples skipped so far (in this process and its workers): box outside the image."""
        return [self.records[j].index for j in torch.nonzero(self._outside).flatten().tolist()]

    def usable_box(self, record: GroundingRecord, width: int, height: int) -> torch.Tensor:
        """``record``'s box clipped to its ``width`` x ``height`` image; ``BoxOutsideImageError`` when nothing with
        an area is left (``utils.box_ops.box_placement``)."""
        if box_placement(record.box_xyxy, width, height) == "outside":
            raise BoxOutsideImageError(
                f"{self.dataset} {self.split} sample {record.index}: box {list(record.box_xyxy)} (x1, y1, x2, y2) lies "
                f"outside its {width}x{height} image {self.image_path(record)}")
        return torch.tensor(clip_xyxy(record.box_xyxy, width, height), dtype=torch.float32)

    def transformed(self, record: GroundingRecord, text: str) -> Transformed:
        """The transform's output for ``record`` (its box clipped to the image, ``usable_box``); on the cached
        canvas of its image with ``cache_images`` and a deterministic transform."""
        if self._items is None:
            image = self.load_image(record)
            box = self.usable_box(record, *image.size)
            rng = self.augmentation_rng(record.index) if self.transform.random else None
            return self.transform(image, box, text, rng)
        canvas = self.cache.canvas(self.image_path(record), self.transform, lambda p: load_image(p, record.index))
        return canvas.place(self.usable_box(record, *canvas.image_size))

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if self._items is None:
            return self._item(i)
        item = self._items.get(i)
        if item is None:
            item = self._items[i] = self._item(i)
        return dict(item)

    def _item(self, i: int) -> Dict[str, Any]:
        """The item of position ``i``; when training skips its sample (box outside the image), that of the next
        usable position."""
        for k in range(len(self.records)):
            j = (i + k) % len(self.records)
            if self._outside[j]:
                continue
            try:
                return self._build_item(j)
            except BoxOutsideImageError:
                if not self.skip_bad:
                    raise
                self._outside[j] = True
        raise InputError(f"{self.dataset} {self.split}: every sample's box lies outside its image; "
                         "`python -m datasets.check` lists them")

    def _build_item(self, i: int) -> Dict[str, Any]:
        record = self.records[i]
        out = self.transformed(record, self.texts[i])
        return {
            "img": out.img,
            "img_mask": out.mask,
            "text": self._tokens[self._rows[i]].to(torch.int64),
            "box": out.box,
            "index": record.index,
            "transform": out.transform,
        }
