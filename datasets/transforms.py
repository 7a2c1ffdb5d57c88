"""Train and eval transforms (docs/method.md#data), built on torchvision's v2 functional ops and PIL.

Both take a PIL RGB image, its xyxy pixel box (float tensor) and the prompted, lower-cased query, and return a
``Transformed``: the normalised image pasted into a zero ``imsize`` square, the padding mask (True = padding),
the box as (cx, cy, w, h) / imsize, and ``transform = [scale, pad_x, pad_y, 0]`` such that
``original xyxy = (canvas xyxy - [pad_x, pad_y, pad_x, pad_y]) / scale`` (see ``canvas_to_original``). The
train transforms fill ``transform`` with the composition of every resize, crop and paste, so it maps back to the
original image there too.

Randomness: every random choice of a train transform is drawn from the ``random.Random`` passed in, in a fixed
order. ``GroundingDataset`` seeds one per sample from (``--seed``, epoch, sample index), so a sample's
augmentation does not depend on the process, the worker or the batch it lands in: a run is reproducible for a
fixed seed whatever the number of processes and workers, a resumed run repeats the same draws, and each epoch
differs.

Crop acceptance: the official ``RandomSizeCrop`` accepts a crop when the box centre x exceeds the crop's *top*
and the centre y its *left* (coordinates swapped), so it may cut the target or drop it from the crop entirely.
Here (``KEEP_OFFICIAL_CROP_QUIRK = False``) a crop is accepted only when the whole box lies inside it, which is
what "the box must stay in the crop" means; ``TrainTransform(official_crop_quirk=True)`` reproduces the
reference's test for comparison.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode

from utils.box_ops import xyxy_to_cxcywh

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DIRECTION_WORDS = ("left", "right", "top", "bottom", "middle")
"""A query containing any of these (substring match) never takes the crop branch."""

CROP_PROB = 0.5
CROP_SHORT_SIDES = (400, 500, 600)
CROP_MIN_SIZE, CROP_MAX_SIZE, CROP_MAX_TRIES = 384, 600, 20
JITTER_PROB, JITTER_FACTORS = 0.8, (0.6, 1.4)
BLUR_PROB, BLUR_RADIUS = 0.5, (0.1, 2.0)

KEEP_OFFICIAL_CROP_QUIRK = False
"""False: a random crop is accepted only when the whole target box lies inside it. True: the reference's test
(box centre x > crop top and centre y > crop left, then the box is clipped to the crop)."""


def train_scales(imsize: int, aug_scale: bool) -> List[int]:
    """Long-side sizes of the train resize: ``[imsize - 32*i for i in 0..6]`` with ``--aug_scale``, else
    ``[imsize]``. Non-positive sizes (``imsize <= 192``, where the reference crashes) are left out."""
    return [size for size in (imsize - 32 * i for i in range(7)) if size > 0] if aug_scale else [imsize]


def has_direction_word(text: str) -> bool:
    """True when ``text`` contains a direction word as a substring (the reference's test)."""
    return any(word in text for word in DIRECTION_WORDS)


def canvas_to_original(boxes_xyxy: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Map xyxy boxes on the padded square input (pixels) back to original-image pixels.

    ``boxes_xyxy``: (..., 4); ``transform``: (..., 4) ``[scale, pad_x, pad_y, 0]`` broadcastable to it.
    """
    transform = transform.to(boxes_xyxy.dtype)
    pad = transform[..., 1:3]
    return (boxes_xyxy - torch.cat([pad, pad], dim=-1)) / transform[..., :1]


@dataclass
class Transformed:
    """A transformed sample: ``img`` (3, S, S) float32, ``mask`` (S, S) bool (True = padding), ``box`` (4,)
    (cx, cy, w, h) / S, ``transform`` (4,) ``[scale, pad_x, pad_y, 0]``; ``branch`` 'resize' (A) or 'crop' (B) and
    ``crop`` the accepted crop region (top, left, height, width) of branch B, None when no crop was applied."""
    img: torch.Tensor
    mask: torch.Tensor
    box: torch.Tensor
    transform: torch.Tensor
    branch: str = "resize"
    crop: Optional[Tuple[int, int, int, int]] = None


@dataclass
class Canvas:
    """The image half of a deterministic transform (long-side resize to ``imsize``, centred pad): computed once per
    image and reused for every box on it (``GroundingDataset`` with ``--cache_images``). ``ratio`` is the exact
    resize factor (``transform[0]`` holds it rounded to float32)."""
    img: torch.Tensor
    mask: torch.Tensor
    transform: torch.Tensor
    ratio: float
    offset: torch.Tensor
    """(4,) float32 ``[pad_x, pad_y, pad_x, pad_y]``: where the resized image sits on the canvas."""
    imsize: int
    image_size: Tuple[int, int]
    """(width, height) of the original image."""

    def place(self, box_xyxy: torch.Tensor) -> Transformed:
        """The transformed sample of ``box_xyxy`` (original-image pixels) on this canvas: the same values, bit for
        bit, as the random train pipeline's resize and paste would give for the same resize and position."""
        box = box_xyxy.to(torch.float32) * self.ratio + self.offset
        return Transformed(img=self.img, mask=self.mask, box=xyxy_to_cxcywh(box) / self.imsize,
                           transform=self.transform)


def resize_and_pad(img: Image.Image, imsize: int) -> Canvas:
    """The deterministic pipeline on an image alone: long side to ``imsize`` (bilinear), to tensor, normalise,
    centred pad."""
    sample = _Sample(img, torch.zeros(4))
    sample.resize(imsize, long_side=True)
    out = sample.normalize_and_pad(imsize, None)
    return Canvas(img=out.img, mask=out.mask, transform=out.transform, ratio=sample.scale,
                  offset=out.transform[[1, 2, 1, 2]], imsize=imsize, image_size=img.size)


class _Sample:
    """Image and box in the current frame, with the map ``current = original * scale + (offset_x, offset_y)``."""

    def __init__(self, img: Image.Image, box: torch.Tensor):
        self.img, self.box = img, box.to(torch.float32).clone()
        self.scale, self.offset_x, self.offset_y = 1.0, 0.0, 0.0

    def resize(self, size: int, long_side: bool) -> None:
        """Resize so the long (or short) side is ``size``: new side = round(side * ratio), bilinear (at least
        1 pixel: the reference crashes on a side that rounds to 0)."""
        w, h = self.img.size
        ratio = size / float(max(h, w) if long_side else min(h, w))
        self.img = F.resize(self.img, [max(1, round(h * ratio)), max(1, round(w * ratio))],
                            interpolation=InterpolationMode.BILINEAR)
        self.box = self.box * ratio
        self.scale, self.offset_x, self.offset_y = self.scale * ratio, self.offset_x * ratio, self.offset_y * ratio

    def crop(self, top: int, left: int, height: int, width: int) -> None:
        """Crop the region and clip the box to it (as the reference does)."""
        self.img = F.crop(self.img, top, left, height, width)
        box = self.box - torch.tensor([left, top, left, top], dtype=torch.float32)
        self.box = torch.minimum(box, torch.tensor([width, height, width, height], dtype=torch.float32)).clamp(min=0)
        self.offset_x, self.offset_y = self.offset_x - left, self.offset_y - top

    def normalize_and_pad(self, imsize: int, rng: Optional[random.Random]) -> Transformed:
        """To tensor, ImageNet-normalise, paste into a zero square (random offset with ``rng``, else centred)."""
        img = F.to_dtype(F.pil_to_tensor(self.img), torch.float32, scale=True)
        img = F.normalize(img, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
        h, w = img.shape[-2:]
        dh, dw = imsize - h, imsize - w
        if rng is None:
            top, left = round(dh / 2.0 - 0.1), round(dw / 2.0 - 0.1)
        else:
            top, left = rng.randint(0, dh), rng.randint(0, dw)
        canvas = F.pad(img, [left, top, dw - left, dh - top], fill=0.0)
        mask = torch.ones((imsize, imsize), dtype=torch.bool)
        mask[top:top + h, left:left + w] = False
        box = xyxy_to_cxcywh(self.box + torch.tensor([left, top, left, top], dtype=torch.float32)) / imsize
        transform = torch.tensor([self.scale, self.offset_x + left, self.offset_y + top, 0.0], dtype=torch.float32)
        return Transformed(img=canvas.contiguous(), mask=mask, box=box, transform=transform)


class EvalTransform:
    """Resize the long side to ``imsize`` (bilinear), to tensor, normalise, centred pad."""

    random = False

    def __init__(self, imsize: int):
        self.imsize = imsize

    def __call__(self, img: Image.Image, box_xyxy: torch.Tensor, text: str = "",
                 rng: Optional[random.Random] = None) -> Transformed:
        return self.canvas(img).place(box_xyxy)

    def canvas(self, img: Image.Image) -> Canvas:
        """The image half of this transform, reusable for every box on ``img``."""
        return resize_and_pad(img, self.imsize)


class TrainTransform:
    """The reference's train pipeline (docs/method.md#data): random select (resize | short-side resize + crop + resize),
    colour jitter (unless ``aug_color`` is off), optional blur, no flip, to tensor, normalise, pad (random offset with
    ``aug_translate``). With every augmentation off it is the eval transform (``random`` is False)."""

    def __init__(self, imsize: int, aug_crop: bool = False, aug_scale: bool = False, aug_blur: bool = False,
                 aug_translate: bool = False, aug_color: bool = True,
                 official_crop_quirk: bool = KEEP_OFFICIAL_CROP_QUIRK):
        self.imsize = imsize
        self.scales = train_scales(imsize, aug_scale)
        self.crop_prob = CROP_PROB if aug_crop else 0.0
        self.blur_prob = BLUR_PROB if aug_blur else 0.0
        self.jitter_prob = JITTER_PROB if aug_color else 0.0
        self.aug_translate = aug_translate
        self.official_crop_quirk = official_crop_quirk

    @property
    def random(self) -> bool:
        """Whether any augmentation is on (otherwise every call returns the same output for the same input)."""
        return (self.crop_prob > 0.0 or len(self.scales) > 1 or self.jitter_prob > 0.0 or self.blur_prob > 0.0
                or self.aug_translate)

    def canvas(self, img: Image.Image) -> Canvas:
        """The image half of this transform when no augmentation is on, reusable for every box on ``img``."""
        if self.random:
            raise ValueError("TrainTransform.canvas: augmentation is on, so the image half differs per sample")
        return resize_and_pad(img, self.imsize)

    def choose_branch(self, text: str, rng: random.Random) -> str:
        """'resize' (branch A) for direction-word queries, else 'crop' (branch B) with ``crop_prob``."""
        if has_direction_word(text) or self.crop_prob == 0.0:
            return "resize"
        return "crop" if rng.random() < self.crop_prob else "resize"

    def accepts_crop(self, box: torch.Tensor, top: int, left: int, height: int, width: int) -> bool:
        """Whether a crop region keeps the box (see KEEP_OFFICIAL_CROP_QUIRK)."""
        x1, y1, x2, y2 = box.tolist()
        if self.official_crop_quirk:
            return (x1 + x2) / 2.0 > top and (y1 + y2) / 2.0 > left
        return x1 >= left and y1 >= top and x2 <= left + width and y2 <= top + height

    def _random_size_crop(self, sample: _Sample, rng: random.Random) -> Optional[Tuple[int, int, int, int]]:
        """Up to CROP_MAX_TRIES random regions; the first accepted one is applied and returned."""
        for _ in range(CROP_MAX_TRIES):
            img_w, img_h = sample.img.size
            max_w, max_h = min(img_w, CROP_MAX_SIZE), min(img_h, CROP_MAX_SIZE)
            width = rng.randint(min(CROP_MIN_SIZE, max_w), max_w)
            height = rng.randint(min(CROP_MIN_SIZE, max_h), max_h)
            top, left = rng.randint(0, img_h - height), rng.randint(0, img_w - width)
            if self.accepts_crop(sample.box, top, left, height, width):
                sample.crop(top, left, height, width)
                return top, left, height, width
        return None

    @staticmethod
    def _color_jitter(img: Image.Image, rng: random.Random) -> Image.Image:
        adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)  # PIL ImageEnhance on PIL input
        for i in rng.sample(range(3), 3):
            img = adjust[i](img, rng.uniform(*JITTER_FACTORS))
        return img

    def __call__(self, img: Image.Image, box_xyxy: torch.Tensor, text: str,
                 rng: Optional[random.Random] = None) -> Transformed:
        if not self.random:
            return self.canvas(img).place(box_xyxy)
        if rng is None:
            raise ValueError("TrainTransform needs a random.Random (GroundingDataset passes one per sample)")
        sample = _Sample(img, box_xyxy)
        branch, crop = self.choose_branch(text, rng), None
        if branch == "crop":
            sample.resize(rng.choice(CROP_SHORT_SIDES), long_side=False)
            crop = self._random_size_crop(sample, rng)
        sample.resize(rng.choice(self.scales), long_side=True)
        if self.jitter_prob > 0.0 and rng.random() < self.jitter_prob:
            sample.img = self._color_jitter(sample.img, rng)
        if self.blur_prob > 0.0 and rng.random() < self.blur_prob:
            sample.img = sample.img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*BLUR_RADIUS)))
        out = sample.normalize_and_pad(self.imsize, rng if self.aug_translate else None)
        out.branch, out.crop = branch, crop
        return out


def build_transform(args: argparse.Namespace, train: bool) -> EvalTransform | TrainTransform:
    """The train or eval transform for ``args`` (``--imsize --aug_crop --aug_scale --aug_blur --aug_translate
    --aug_color``)."""
    if not train:
        return EvalTransform(args.imsize)
    return TrainTransform(args.imsize, aug_crop=args.aug_crop, aug_scale=args.aug_scale, aug_blur=args.aug_blur,
                          aug_translate=args.aug_translate, aug_color=args.aug_color)
