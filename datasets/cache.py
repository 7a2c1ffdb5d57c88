"""``DataCache``: what data sets keep in memory beyond one item, in one object whose owner decides how long it lives.

Owners: a training or evaluation run makes one for the data sets it builds, unless its caller hands it one; the
curriculum drivers' in-process launcher keeps one for every run it makes in its process, and the demo one for the
evaluations it makes in its own, so those runs tokenise each query and resize each image once instead of once per
run. Its contents are pure functions of the files they were made from (a changed image file is read again), so
sharing one changes no result.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Sequence, Tuple

import clip
import torch
from PIL import Image

from datasets.transforms import Canvas, EvalTransform, TrainTransform

ImageKey = Tuple[str, int, int]
"""(path, file size, modification time in ns): a rewritten file gets a new key."""


def image_key(path: str) -> ImageKey:
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


class DataCache:
    """Query tokens (always), and for ``--cache_images`` decoded images (augmenting transforms) and transformed
    canvases (deterministic transforms: evaluation, training with every augmentation off)."""

    def __init__(self) -> None:
        self._tokens: Dict[Tuple[str, int], torch.Tensor] = {}
        self._images: Dict[ImageKey, Image.Image] = {}
        self._canvases: Dict[Tuple[ImageKey, int], Canvas] = {}

    def tokenize(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        """``clip.tokenize(texts, context_length, truncate=True)`` as int32 rows, each text tokenised once per cache
        (CLIP's text cleaning is slow)."""
        new = [t for t in dict.fromkeys(texts) if (t, context_length) not in self._tokens]
        if new:
            fresh = clip.tokenize(new, context_length=context_length, truncate=True).to(torch.int32)
            self._tokens.update(((t, context_length), row) for t, row in zip(new, fresh))
        if not texts:
            return torch.zeros((0, context_length), dtype=torch.int32)
        return torch.stack([self._tokens[t, context_length] for t in texts])

    def image(self, path: str, load: Callable[[str], Image.Image]) -> Image.Image:
        """The image at ``path`` as ``load(path)`` decodes it, decoded once (the transforms never modify an image in
        place)."""
        key = image_key(path)
        image = self._images.get(key)
        if image is None:
            image = self._images[key] = load(path)
        return image

    def canvas(self, path: str, transform: EvalTransform | TrainTransform,
               load: Callable[[str], Image.Image]) -> Canvas:
        """The image at ``path`` (decoded by ``load``) resized, normalised and padded by the deterministic
        ``transform``, once per image and size (the same computation for the eval transform and a train transform
        without augmentation)."""
        key = (image_key(path), transform.imsize)
        canvas = self._canvases.get(key)
        if canvas is None:
            canvas = self._canvases[key] = transform.canvas(load(path))
        return canvas
