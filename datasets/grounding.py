"""``GroundingDataset``: a split's records, their tokenised queries and the transform (SPEC §2).

Queries: the ``--prompt`` template is applied first (``{pseudo_query}`` replaced by the query; an empty prompt
means the query alone), then the text is lower-cased and tokenised once, at construction, with
``clip.tokenize(..., context_length=max_query_len, truncate=True)``. Longer queries are truncated and reported in
one line per dataset (count and first sample index).

Items are dicts that ``torch.utils.data.default_collate`` batches::

    img (3, S, S) float32 | img_mask (S, S) bool, True = padding | text (Lq,) int64, 0 = padding
    box (4,) float32 (cx, cy, w, h) / S | index int, position in the split file | transform (4,) float32
"""
from __future__ import annotations

import functools
import os
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import clip
import torch
from clip.simple_tokenizer import SimpleTokenizer
from PIL import Image
from torch.utils.data import Dataset

from datasets.records import (BadSampleError, GroundingRecord, check_split_name, image_dir, load_split,
                              parse_records, split_paths)
from datasets.transforms import Canvas, EvalTransform, Transformed, TrainTransform
from utils.errors import InputError
from utils.prompt import apply_prompt, check_prompt


class ImageLoadError(OSError):
    """A sample's image is missing or cannot be decoded (the message names the file and the sample index)."""


@functools.lru_cache(maxsize=1)
def _bpe() -> SimpleTokenizer:
    return SimpleTokenizer()


_TOKENS: Dict[Tuple[str, int], torch.Tensor] = {}
"""``clip.tokenize`` rows (int32) by (text, context length), kept for the life of the process: the runs an
in-process driver makes one after another tokenise mostly the same texts, and CLIP's text cleaning is slow."""


def tokenize_queries(texts: Sequence[str], context_length: int) -> Tuple[torch.Tensor, torch.Tensor, List[int]]:
    """Tokenise ``texts`` with ``clip.tokenize(..., truncate=True)``, each distinct text once.

    Returns ``(tokens, rows, long)``: ``tokens`` (U, context_length) int32 for the distinct texts, ``rows`` (N,)
    int64 with ``tokens[rows[i]]`` the ids of ``texts[i]``, and the positions ``i`` whose text was longer than
    the context (start and end tokens included) and got truncated.
    """
    position: Dict[str, int] = {}
    rows = torch.tensor([position.setdefault(t, len(position)) for t in texts], dtype=torch.int64)
    unique = list(position)
    new = [t for t in unique if (t, context_length) not in _TOKENS]
    if new:
        fresh = clip.tokenize(new, context_length=context_length, truncate=True).to(torch.int32)
        _TOKENS.update(((t, context_length), row) for t, row in zip(new, fresh))
    tokens = torch.stack([_TOKENS[t, context_length] for t in unique]) if unique \
        else torch.zeros((0, context_length), dtype=torch.int32)
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


_SHARED_CANVASES: Dict[Tuple[str, int, int, int], Canvas] = {}
"""Canvases of ``--cache_images`` kept for the life of the process and shared by every data set in it, keyed by
(image path, file size, modification time, imsize): the runs an in-process driver makes one after another (search
candidates, final model) resize each image once, not once per run. The canvas is the same computation either way."""


def shared_canvas(path: str, transform: EvalTransform | TrainTransform, index: int) -> Canvas:
    """The canvas of the image at ``path`` under the deterministic ``transform`` (from ``_SHARED_CANVASES``)."""
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns, transform.imsize)
    canvas = _SHARED_CANVASES.get(key)
    if canvas is None:
        canvas = _SHARED_CANVASES[key] = transform.canvas(load_image(path, index))
    return canvas


class GroundingDataset(Dataset):
    """One split of a grounding dataset (see the module docstring for the item layout).

    ``records`` holds the usable samples in split order, each with ``index`` = its position in the split file;
    ``records_by_index`` maps that position to the record. Bad samples (``BadSampleError``) are dropped with one
    printed line when ``skip_bad`` (training), and raise naming the first and the count otherwise (evaluation).
    Every distinct image file must exist: the constructor checks them all (``os.path.exists``) and raises
    ``FileNotFoundError`` naming the first missing one.
    """

    def __init__(self, dataset: str, split: str, data_root: str, split_root: str,
                 transform: EvalTransform | TrainTransform, max_query_len: int = 77, prompt: Optional[str] = None,
                 skip_bad: bool = False, seed: int = 0, cache_images: bool = False):
        check_split_name(dataset, split)
        check_prompt(prompt)
        self.dataset, self.split, self.transform = dataset, split, transform
        self.seed = seed
        # Shared with DataLoader workers (persistent ones too), so set_epoch reaches them.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.image_dir = image_dir(data_root, dataset)
        # --cache_images: decoded images, or with a deterministic transform (evaluation, training without
        # augmentation) the transformed canvases (``shared_canvas``, one per image for the whole process) and, since
        # every item is then deterministic too, the items, built once per position (sharing the canvas's tensors).
        self._image_cache: Optional[Dict[str, Image.Image]] = {} if cache_images and transform.random else None
        self._canvases = cache_images and not transform.random
        self._item_cache: Optional[Dict[int, Dict[str, Any]]] = {} if self._canvases else None
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
        self._check_images(data_root, split_root)
        self.texts = [apply_prompt(r.query, prompt) for r in records]
        self._tokens, self._rows, long = tokenize_queries(self.texts, max_query_len)
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
        """The RGB image of ``record``; with ``cache_images`` and an augmenting transform decoded once per process
        and kept in memory (the transforms never modify an image in place)."""
        path = self.image_path(record)
        if self._image_cache is None:
            return load_image(path, record.index)
        image = self._image_cache.get(path)
        if image is None:
            image = self._image_cache[path] = load_image(path, record.index)
        return image

    def __len__(self) -> int:
        return len(self.records)

    def transformed(self, record: GroundingRecord, text: str) -> Transformed:
        """The transform's output for ``record``; on the shared canvas of its image with cached canvases."""
        box = torch.tensor(record.box_xyxy, dtype=torch.float32)
        if not self._canvases:
            rng = self.augmentation_rng(record.index) if self.transform.random else None
            return self.transform(self.load_image(record), box, text, rng)
        return shared_canvas(self.image_path(record), self.transform, record.index).place(box)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if self._item_cache is None:
            return self._item(i)
        item = self._item_cache.get(i)
        if item is None:
            item = self._item_cache[i] = self._item(i)
        return dict(item)

    def _item(self, i: int) -> Dict[str, Any]:
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
