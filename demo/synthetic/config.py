"""The synthetic world's configuration: ``SyntheticConfig`` (everything that decides a world), the fixed
vocabulary of its scenes (classes in two families, colours, sizes, predicates, location words, expression kinds) and
the seeded random streams every part of the generator draws from."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

DATASET = "synthetic"
GENERATOR_VERSION = 1
SPLITS = ("train", "val", "testA", "testB")

FAMILIES: Dict[str, Tuple[str, ...]] = {
    "round": ("circle", "ring", "ellipse", "semicircle"),
    "angular": ("square", "triangle", "star", "cross"),
}
TEST_FAMILY = {"testA": "round", "testB": "angular"}
CLASSES: Tuple[str, ...] = tuple(c for members in FAMILIES.values() for c in members)
FAMILY_OF = {c: family for family, members in FAMILIES.items() for c in members}
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (214, 39, 40), "green": (40, 165, 50), "blue": (35, 85, 225),
    "yellow": (245, 205, 30), "purple": (150, 60, 195), "white": (245, 245, 245),
}
SIZES = ("small", "medium", "large")
SIZE_EXTENT = {"small": (20.0, 24.0), "medium": (30.0, 36.0), "large": (42.0, 50.0)}
"""Extent (long side, px) of each size class at 128 px images; scaled with ``image_size``."""
PREDICATES = ("left of", "right of", "above", "below", "next to")
LOCATIONS = ("left", "right", "top", "bottom", "middle")
KINDS = ("category", "attribute", "spatial", "relation", "caption")
"""Ground-truth expression kinds, in the order of ``SyntheticConfig.expression_mix``."""
MAX_SPURIOUS = 4
"""At most this many spurious detections per image (``SyntheticConfig.spurious_rate`` is their expected number)."""
_STREAMS = {"scene": 1, "render": 2, "expressions": 3, "detections": 4, "attributes": 5, "scene_graphs": 6,
            "captions": 7, "pretrain": 8}
_SPLIT_CODES = {"train": 0, "val": 1, "testA": 2, "testB": 3, "pretrain": 4}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that decides the generated world (its hash names the cache in ``world.json``).

    Noise: ``miss_rate`` (per object, scaled x1.6 / x1 / x0.4 for small / medium / large; also the attribute
    detector's miss rate), ``class_error_rate`` (per detection: a sibling class mostly), ``duplicate_rate`` (per
    object: a second, shifted box with IoU mostly below 0.5), ``spurious_rate`` (expected spurious boxes per image,
    at most 4), ``box_jitter`` (standard deviation of each box side as a fraction of the object's width/height),
    ``wrong_attribute_rate`` (per attribute), ``relation_error_rate`` (per triplet), ``caption_error_rate`` (per
    caption). ``same_class_rate``: chance that a new object repeats a class already in the scene (then its colour
    too, 40% of the time), which makes spatial and relational language necessary. ``expression_mix`` weighs the
    ground-truth kinds in :data:`KINDS` order (a kind that has no valid expression falls back to another).
    ``object_scale`` multiplies every shape's extent (:data:`SIZE_EXTENT`, scaled with ``image_size``).
    ``class_textures``: each class is filled with its own pattern (:func:`class_texture`), so that a tiny CLIP at low
    resolution can tell classes apart by texture, not only by outline.
    Human expressions start from a shortest unique description; like people's, they then over-specify: one that does
    not name the target's class names it with probability ``overspecify_category``, then one that does not say its
    colour says it with probability ``overspecify_colour`` (still true and unique: words are only added). A
    'category' expression that gains its colour becomes an 'attribute' one.
    """
    seed: int = 0
    image_size: int = 128
    n_train_images: int = 800
    n_val_images: int = 150
    n_testA_images: int = 150
    n_testB_images: int = 150
    min_objects: int = 3
    max_objects: int = 5
    object_scale: float = 1.0
    expressions_per_image: int = 3
    same_class_rate: float = 0.35
    expression_mix: Tuple[float, ...] = (0.10, 0.25, 0.20, 0.30, 0.15)
    n_pretrain: int = 2000
    captions_per_image: int = 2
    triplets_per_image: int = 6
    box_jitter: float = 0.08
    miss_rate: float = 0.10
    spurious_rate: float = 0.30
    class_error_rate: float = 0.08
    wrong_attribute_rate: float = 0.15
    duplicate_rate: float = 0.10
    caption_error_rate: float = 0.15
    relation_error_rate: float = 0.15
    jpeg_quality: int = 90
    class_textures: bool = False
    overspecify_category: float = 0.0
    overspecify_colour: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression_mix", tuple(float(v) for v in self.expression_mix))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field at fault."""
        ints = {"seed": 0, "image_size": 64, "n_train_images": 1, "n_val_images": 1, "n_testA_images": 1,
                "n_testB_images": 1, "min_objects": 2, "expressions_per_image": 1, "n_pretrain": 0,
                "captions_per_image": 0, "triplets_per_image": 0, "jpeg_quality": 1}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"SyntheticConfig.{name} must be an integer >= {low}, got {value!r}")
        if not self.min_objects <= self.max_objects <= 8:
            raise ValueError(f"SyntheticConfig.max_objects must be in [min_objects={self.min_objects}, 8], "
                             f"got {self.max_objects}")
        if not (isinstance(self.object_scale, (int, float)) and 0.5 <= self.object_scale <= 2.0):
            raise ValueError(f"SyntheticConfig.object_scale must be in [0.5, 2], got {self.object_scale!r}")
        if not isinstance(self.class_textures, bool):
            raise ValueError(f"SyntheticConfig.class_textures must be true or false, got {self.class_textures!r}")
        if self.jpeg_quality > 100:
            raise ValueError(f"SyntheticConfig.jpeg_quality must be <= 100, got {self.jpeg_quality}")
        for name in ("same_class_rate", "miss_rate", "class_error_rate", "wrong_attribute_rate", "duplicate_rate",
                     "caption_error_rate", "relation_error_rate", "overspecify_category", "overspecify_colour"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SyntheticConfig.{name} must be in [0, 1], got {value!r}")
        if not 0.0 <= self.box_jitter <= 0.5:
            raise ValueError(f"SyntheticConfig.box_jitter must be in [0, 0.5], got {self.box_jitter!r}")
        if not 0.0 <= self.spurious_rate <= MAX_SPURIOUS:
            raise ValueError(f"SyntheticConfig.spurious_rate must be in [0, {MAX_SPURIOUS}], "
                             f"got {self.spurious_rate!r}")
        mix = self.expression_mix
        if len(mix) != len(KINDS) or any(not math.isfinite(v) or v < 0 for v in mix) or sum(mix) <= 0:
            raise ValueError(f"SyntheticConfig.expression_mix must be {len(KINDS)} non-negative weights for "
                             f"{', '.join(KINDS)} with a positive sum, got {mix!r}")

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    def config_hash(self) -> str:
        """Hash of the config and the generator version (the cache key)."""
        text = json.dumps({"version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def split_sizes(self) -> Dict[str, int]:
        return {"train": self.n_train_images, "val": self.n_val_images, "testA": self.n_testA_images,
                "testB": self.n_testB_images}


def rng_for(config: SyntheticConfig, stream: str, split: str, index: int) -> np.random.Generator:
    """The random stream of one purpose (``scene``, ``render``, ``expressions``, ``detections``, ...) for image
    ``index`` of ``split``: a function of (seed, purpose, split, index) only."""
    return np.random.default_rng([config.seed, _STREAMS[stream], _SPLIT_CODES[split], index])
