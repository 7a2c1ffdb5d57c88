"""Synthetic referring world: a seeded generator of a complete grounding data set in the official layout.

Scenes hold a few coloured shapes of three visually distinct sizes on textured backgrounds. Shapes come in two
category families (``round``: circle, ring, ellipse, semicircle; ``angular``: square, triangle, star, cross), so
``testA`` (targets are round shapes) and ``testB`` (targets are angular shapes) play the roles of RefCOCO's
people / objects splits; ``train`` and ``val`` are mixed.

Ground-truth expressions are human-style ("the small red circle on the left", "the blue square below the green
star", "a yellow ring sitting next to a white cross") and are generated from a formal :class:`ExpressionSpec`
that :func:`describe_matches` evaluates against the scene: every written expression matches exactly its target.

For the ``train`` images only, the generator also writes what off-the-shelf upstream models would say about them
(``docs/upstream_formats.md``): detector boxes with classes and scores, attribute predictions, scene-graph
triplets and captions, each with controllable noise (box jitter, missed, spurious and duplicate detections,
class confusions, wrong attributes, wrong relations, wrong captions). A separate image-caption corpus serves to
pretrain a tiny CLIP.

Layout under ``data_root``::

    synthetic/images/syn_000001.jpg ...        train, val, testA, testB images (one folder, global numbering)
    synthetic/upstream/{detections,attributes,scene_graphs,captions,synonyms}.json   train images only
    synthetic/pretrain/caption_corpus.json + pretrain_images/pre_000001.jpg ...
    synthetic/annotations.json                  every scene's objects and expressions (ground truth)
    synthetic/world.json                        config, its hash, vocabulary and the summary (written last)

and ``{split_root}/synthetic/synthetic_{split}.pth`` for ``train``, ``val``, ``testA``, ``testB`` with samples
``(image_file, object_id, [x, y, w, h], phrase, expression_kind)``; boxes are whole pixels stored as floats, so
the loaders' ``int()`` truncation is exact.

Every random draw comes from a ``numpy`` Generator keyed by (seed, split, image index, purpose), so a seed gives
byte-identical files, changing one split's size leaves the other splits' scenes unchanged, and changing a noise
level leaves the scenes, images and ground truth unchanged (the detector's draws do not even depend on its rates,
so raising one only adds noise of that kind).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from utils.box_ops import elementwise_iou
from utils.io import atomic_torch_save, atomic_write_bytes
from utils.misc import available_cpus

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

SYNONYMS: Dict[str, Tuple[str, ...]] = {
    "circle": ("circle", "disc", "dot", "ball"), "ring": ("ring", "donut", "hoop"),
    "ellipse": ("ellipse", "oval"), "semicircle": ("semicircle", "dome", "half moon"),
    "square": ("square", "box", "block"), "triangle": ("triangle", "pyramid"),
    "star": ("star",), "cross": ("cross", "plus", "plus sign"),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("medium", "medium-sized", "mid-sized"),
              "large": ("large", "big")}
GENERIC_NOUNS = ("shape", "one", "object", "thing")
LOC_PREFIX = {"left": ("left", "leftmost"), "right": ("right", "rightmost"), "top": ("top", "upper", "topmost"),
              "bottom": ("bottom", "lower", "bottommost"), "middle": ("middle", "center", "central")}
LOC_SUFFIX = {"left": ("on the left", "to the left", "at left", "on left"),
              "right": ("on the right", "to the right", "at right", "on right"),
              "top": ("at the top", "on top", "at top", "up top"),
              "bottom": ("at the bottom", "on the bottom", "at bottom", "down low"),
              "middle": ("in the middle", "in the center", "in middle")}
LOC_CAPTION = {"left": ("on the left side of the picture", "on the left side of the image", "sitting on the left"),
               "right": ("on the right side of the picture", "on the right side of the image",
                         "sitting on the right"),
               "top": ("near the top of the picture", "at the top of the image", "sitting up top"),
               "bottom": ("near the bottom of the picture", "at the bottom of the image", "sitting down low"),
               "middle": ("in the middle of the picture", "in the center of the image", "sitting in the middle")}
PRED_WORDS = {"left of": ("left of", "to the left of", "on the left of"),
              "right of": ("right of", "to the right of", "on the right of"),
              "above": ("above", "over"), "below": ("below", "under", "beneath", "underneath"),
              "next to": ("next to", "beside", "near", "close to", "by")}
CAPTION_VERBS = ("", "sitting ", "placed ", "lying ")

# Geometry thresholds, as fractions of the image side: (loose, strict). describe_matches uses the loose ones
# (anything that might be read as matching counts), the generator demands the strict ones of the target.
_LOC_MARGIN = (0.06, 0.12)
_ABS_SIDE = (0.45, 0.38)
_MIDDLE_BAND = (0.15, 0.10)
_REL_MARGIN = (0.06, 0.10)
_REL_RATIO = (1.0, 1.5)
_NEXT_GAP = (0.10, 0.05)
_MAX_OVERLAP = 0.15
_MISS_SIZE_FACTOR = {"small": 1.6, "medium": 1.0, "large": 0.4}
_SCORE_BASE = {"small": 0.6, "medium": 0.7, "large": 0.8}
_MAX_SPURIOUS = 4
_SIZE_ATTRIBUTE_RATE = 0.35
_SAME_COLOUR_RATE = 0.4
_FAMILY_BIAS = 0.65
_SYNONYM_RATE = 0.25

_STREAMS = {"scene": 1, "render": 2, "expressions": 3, "detections": 4, "attributes": 5, "scene_graphs": 6,
            "captions": 7, "pretrain": 8}
_SPLIT_CODES = {"train": 0, "val": 1, "testA": 2, "testB": 3, "pretrain": 4}
_IMAGE_RE = re.compile(r"^(syn|pre)_\d{6}\.jpg$")
_PARALLEL_MIN_IMAGES = 1000


# ----------------------------------------------------------------------------------------------------- config
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
        if not 0.0 <= self.spurious_rate <= _MAX_SPURIOUS:
            raise ValueError(f"SyntheticConfig.spurious_rate must be in [0, {_MAX_SPURIOUS}], "
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


def _rng(config: SyntheticConfig, stream: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, _STREAMS[stream], _SPLIT_CODES[split], index])


# ------------------------------------------------------------------------------------------------ scene model
@dataclass(frozen=True)
class Pose:
    """How a shape is drawn: centre, extent (px), rotation (degrees) and a variant (orientation) flag."""
    cx: float
    cy: float
    extent: float
    angle: float
    variant: int


@dataclass(frozen=True)
class SceneObject:
    """One shape; ``box`` is its tight box ``[x1, y1, x2, y2]`` in whole pixels."""
    id: int
    category: str
    colour: str
    size: str
    box: Tuple[float, float, float, float]
    pose: Pose

    @property
    def family(self) -> str:
        return FAMILY_OF[self.category]

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class ExpressionSpec:
    """What an expression says: ``category`` (None = any shape), ``colour``, ``size``, ``location`` words
    (one of :data:`LOCATIONS`, or a vertical + horizontal pair such as ``("top", "left")``) and ``relation``
    ``(predicate, spec of the reference object)``."""
    category: Optional[str] = None
    colour: Optional[str] = None
    size: Optional[str] = None
    location: Tuple[str, ...] = ()
    relation: Optional[Tuple[str, "ExpressionSpec"]] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {k: getattr(self, k) for k in ("category", "colour", "size") if getattr(self, k)}
        if self.location:
            out["location"] = list(self.location)
        if self.relation:
            out["relation"] = {"predicate": self.relation[0], "object": self.relation[1].to_dict()}
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ExpressionSpec":
        relation = data.get("relation")
        return cls(category=data.get("category"), colour=data.get("colour"), size=data.get("size"),
                   location=tuple(data.get("location", ())),
                   relation=(relation["predicate"], cls.from_dict(relation["object"])) if relation else None)


@dataclass(frozen=True)
class Expression:
    """A ground-truth expression: its text, target object id, meaning and kind (one of :data:`KINDS`)."""
    phrase: str
    target: int
    spec: ExpressionSpec
    kind: str


@dataclass(frozen=True)
class Scene:
    """One image: its file name, size, objects (in drawing order) and ground-truth expressions."""
    image: str
    width: int
    height: int
    objects: Tuple[SceneObject, ...]
    expressions: Tuple[Expression, ...] = ()

    def obj(self, object_id: int) -> SceneObject:
        return self.objects[object_id]


# -------------------------------------------------------------------------------------------------- semantics
def _location_holds(obj: SceneObject, candidates: Sequence[SceneObject], word: str, side: float,
                    strict: bool) -> bool:
    s = int(strict)
    others = [c for c in candidates if c.id != obj.id]
    if not others:  # a lone candidate: the word describes where it is in the image
        if word == "middle":
            return abs(obj.cx - side / 2) < _MIDDLE_BAND[s] * side
        pos = obj.cx if word in ("left", "right") else obj.cy
        return pos < _ABS_SIDE[s] * side if word in ("left", "top") else pos > (1 - _ABS_SIDE[s]) * side
    m = _LOC_MARGIN[s] * side
    if word == "middle":
        return any(c.cx < obj.cx - m for c in others) and any(c.cx > obj.cx + m for c in others)
    if word == "left":
        return all(obj.cx < c.cx - m for c in others)
    if word == "right":
        return all(obj.cx > c.cx + m for c in others)
    if word == "top":
        return all(obj.cy < c.cy - m for c in others)
    if word == "bottom":
        return all(obj.cy > c.cy + m for c in others)
    raise ValueError(f"unknown location word {word!r}; valid: {', '.join(LOCATIONS)}")


def _box_gap(a: SceneObject, b: SceneObject) -> float:
    dx = max(0.0, max(a.box[0], b.box[0]) - min(a.box[2], b.box[2]))
    dy = max(0.0, max(a.box[1], b.box[1]) - min(a.box[3], b.box[3]))
    return math.hypot(dx, dy)


def relation_holds(subject: SceneObject, ref: SceneObject, predicate: str, side: float,
                   strict: bool = False) -> bool:
    """Whether ``subject predicate ref`` is true (``strict``: clearly true, as a generator would demand)."""
    s = int(strict)
    if predicate == "next to":
        return _box_gap(subject, ref) < _NEXT_GAP[s] * side
    dx, dy = ref.cx - subject.cx, ref.cy - subject.cy
    m, ratio = _REL_MARGIN[s] * side, _REL_RATIO[s]
    if predicate == "left of":
        return dx > m and abs(dx) >= ratio * abs(dy)
    if predicate == "right of":
        return -dx > m and abs(dx) >= ratio * abs(dy)
    if predicate == "above":
        return dy > m and abs(dy) >= ratio * abs(dx)
    if predicate == "below":
        return -dy > m and abs(dy) >= ratio * abs(dx)
    raise ValueError(f"unknown predicate {predicate!r}; valid: {', '.join(PREDICATES)}")


def _base_match(obj: SceneObject, spec: ExpressionSpec) -> bool:
    return ((spec.category is None or obj.category == spec.category)
            and (spec.colour is None or obj.colour == spec.colour)
            and (spec.size is None or obj.size == spec.size))


def describe_matches(scene: Scene, spec: ExpressionSpec) -> List[int]:
    """Ids of the scene's objects that ``spec`` describes.

    Semantics: category, colour and size are exact (size classes are absolute); a relation holds when the
    object stands in that relation to at least one other object matching the relation's spec; location words
    then pick among the objects matching everything else: with one such object the word says where it is in the
    image, with several it says which is the extreme one (``middle``: one with others on both sides), by a
    margin. Every threshold is the loose one, so an object that could be read as matching counts.
    """
    return _match(scene, spec, {})


def _match(scene: Scene, spec: ExpressionSpec, cache: Dict[ExpressionSpec, List[int]]) -> List[int]:
    """:func:`describe_matches` with a per-scene memo (``cache``) for the generator's many queries."""
    hit = cache.get(spec)
    if hit is not None:
        return hit
    side = float(max(scene.width, scene.height))
    candidates = [o for o in scene.objects if _base_match(o, spec)]
    if spec.relation is not None:
        predicate, ref_spec = spec.relation
        refs = [scene.obj(i) for i in _match(scene, ref_spec, cache)]
        candidates = [o for o in candidates
                      if any(r.id != o.id and relation_holds(o, r, predicate, side) for r in refs)]
    if spec.location:
        pool = list(candidates)
        candidates = [o for o in pool if all(_location_holds(o, pool, w, side, False) for w in spec.location)]
    cache[spec] = [o.id for o in candidates]
    return cache[spec]


def _clearly_true(scene: Scene, target: SceneObject, spec: ExpressionSpec,
                  cache: Dict[ExpressionSpec, List[int]]) -> bool:
    """The strict reading of ``spec`` holds for ``target`` (demanded on top of uniqueness when generating)."""
    side = float(max(scene.width, scene.height))
    if spec.relation is not None:
        predicate, ref_spec = spec.relation
        refs = _match(scene, ref_spec, cache)
        if len(refs) != 1 or not relation_holds(target, scene.obj(refs[0]), predicate, side, strict=True):
            return False
    if spec.location:
        base = ExpressionSpec(spec.category, spec.colour, spec.size, (), spec.relation)
        pool = [scene.obj(i) for i in _match(scene, base, cache)]
        return all(_location_holds(target, pool, w, side, True) for w in spec.location)
    return True


# ------------------------------------------------------------------------------------------- scene sampling
def _shape_outline(category: str, pose: Pose) -> Tuple[str, Any]:
    """Drawing primitive of a shape in image pixels: ("ellipse"|"ring", bbox), ("chord", (bbox, start, end))
    or ("polygon", points)."""
    cx, cy, e = pose.cx, pose.cy, pose.extent
    if category in ("circle", "ring"):
        return category if category == "ring" else "ellipse", (cx - e / 2, cy - e / 2, cx + e / 2, cy + e / 2)
    if category == "ellipse":
        a, b = (e / 2, e * 0.31) if pose.variant == 0 else (e * 0.31, e / 2)
        return "ellipse", (cx - a, cy - b, cx + a, cy + b)
    if category == "semicircle":
        r = e / 2
        ccy = cy + r / 2 if pose.variant == 0 else cy - r / 2
        angles = (180, 360) if pose.variant == 0 else (0, 180)
        return "chord", ((cx - r, ccy - r, cx + r, ccy + r), *angles)
    if category == "square":
        pts = [(-0.4, -0.4), (0.4, -0.4), (0.4, 0.4), (-0.4, 0.4)]
    elif category == "triangle":
        sign = 1 if pose.variant == 0 else -1
        pts = [(0.0, -0.433 * sign), (0.5, 0.433 * sign), (-0.5, 0.433 * sign)]
    elif category == "star":
        pts = [((0.5 if k % 2 == 0 else 0.21) * math.cos(math.pi * (k / 5 - 0.5)),
                (0.5 if k % 2 == 0 else 0.21) * math.sin(math.pi * (k / 5 - 0.5))) for k in range(10)]
    elif category == "cross":
        t = 0.17
        pts = [(-t, -0.5), (t, -0.5), (t, -t), (0.5, -t), (0.5, t), (t, t), (t, 0.5), (-t, 0.5), (-t, t),
               (-0.5, t), (-0.5, -t), (-t, -t)]
    else:
        raise ValueError(f"unknown category {category!r}; valid: {', '.join(CLASSES)}")
    c, s = math.cos(math.radians(pose.angle)), math.sin(math.radians(pose.angle))
    xs, ys = [x * c - y * s for x, y in pts], [x * s + y * c for x, y in pts]
    span = max(max(xs) - min(xs), max(ys) - min(ys))  # scaled so that the box's long side is the extent
    return "polygon", [(cx + e * x / span, cy + e * y / span) for x, y in zip(xs, ys)]


def _outline_box(category: str, pose: Pose) -> Tuple[float, float, float, float]:
    kind, geo = _shape_outline(category, pose)
    if kind == "polygon":
        xs, ys = [p[0] for p in geo], [p[1] for p in geo]
        return min(xs), min(ys), max(xs), max(ys)
    if kind == "chord":
        (x1, y1, x2, y2), start, _ = geo
        r = (y2 - y1) / 2
        return (x1, y1, x2, y1 + r) if start == 180 else (x1, y1 + r, x2, y2)
    return tuple(geo)


def _overlap_fraction(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _pick_category(rng: np.random.Generator, family: Optional[str]) -> str:
    if family is None:
        return CLASSES[int(rng.integers(len(CLASSES)))]
    other = next(f for f in FAMILIES if f != family)
    members = FAMILIES[family] if rng.random() < _FAMILY_BIAS else FAMILIES[other]
    return members[int(rng.integers(len(members)))]


def _extent_scale(config: SyntheticConfig) -> float:
    """Factor from :data:`SIZE_EXTENT` (px at 128 px images) to this world's shape extents."""
    return config.image_size / 128.0 * config.object_scale


def _place(rng: np.random.Generator, config: SyntheticConfig, category: str, size: str,
           placed: Sequence[SceneObject]) -> Optional[Tuple[Tuple[float, float, float, float], Pose]]:
    side = config.image_size
    lo, hi = SIZE_EXTENT[size]
    extent = rng.uniform(lo, hi) * _extent_scale(config) * (1.2 if category in ("ellipse", "semicircle") else 1.0)
    angle = rng.uniform(-15.0, 15.0) if category in ("square", "triangle", "star", "cross") else 0.0
    variant = int(rng.random() < 0.5) if category in ("ellipse", "semicircle") else int(rng.random() < 0.2)
    x1, y1, x2, y2 = _outline_box(category, Pose(0.0, 0.0, extent, angle, variant))
    margin = 2.0
    for _ in range(40):
        cx = rng.uniform(margin - x1, side - margin - x2)
        cy = rng.uniform(margin - y1, side - margin - y2)
        pose = Pose(cx, cy, extent, angle, variant)
        bx = _outline_box(category, pose)
        box = (float(math.floor(bx[0])), float(math.floor(bx[1])), float(math.ceil(bx[2])), float(math.ceil(bx[3])))
        if all(_overlap_fraction(box, o.box) <= _MAX_OVERLAP for o in placed):
            return box, pose
    return None


def sample_scene(config: SyntheticConfig, split: str, index: int, image: str) -> Scene:
    """The objects of image ``index`` of ``split`` (``pretrain`` included); testA/testB scenes hold at least
    two objects of their target family."""
    rng = _rng(config, "scene", split, index)
    family = TEST_FAMILY.get(split)
    for _ in range(100):
        n = int(rng.integers(config.min_objects, config.max_objects + 1))
        objects: List[SceneObject] = []
        for _k in range(n):
            if objects and rng.random() < config.same_class_rate:
                model = objects[int(rng.integers(len(objects)))]
                category = model.category
                colour = model.colour if rng.random() < _SAME_COLOUR_RATE else list(COLOURS)[
                    int(rng.integers(len(COLOURS)))]
            else:
                category = _pick_category(rng, family)
                colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            size = SIZES[int(rng.integers(len(SIZES)))]
            spot = _place(rng, config, category, size, objects)
            if spot is not None:
                objects.append(SceneObject(len(objects), category, colour, size, spot[0], spot[1]))
        if len(objects) >= config.min_objects and (
                family is None or sum(o.family == family for o in objects) >= 2):
            return Scene(image, config.image_size, config.image_size, tuple(objects))
    raise RuntimeError(f"could not place {config.min_objects} objects in a {config.image_size}px image "
                       f"({split} image {index}); raise --image_size or lower --min_objects")


# --------------------------------------------------------------------------------------------------- drawing
def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A muted textured background: a colour ramp plus stripes, smooth blotches or blocky grain, plus noise."""
    c = np.arange(side, dtype=np.float32) / side
    base = (rng.uniform(85.0, 165.0) + rng.normal(0.0, 12.0, 3)).astype(np.float32)
    theta = rng.uniform(0.0, 2 * math.pi)
    amp = rng.uniform(10.0, 35.0)
    ramp = amp * ((c[None, :] - 0.5) * math.cos(theta) + (c[:, None] - 0.5) * math.sin(theta))
    texture = int(rng.integers(3))
    weights = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    if texture == 0:  # stripes
        a, freq, phase = rng.uniform(0.0, math.pi), rng.uniform(3.0, 10.0), rng.uniform(0.0, 2 * math.pi)
        pattern = np.sin(2 * math.pi * freq * (c[None, :] * math.cos(a) + c[:, None] * math.sin(a)) + phase)
        strength = rng.uniform(6.0, 18.0)
    else:  # smooth blotches (texture 1) or blocky grain (texture 2)
        cells = int(rng.integers(4, 9)) if texture == 1 else side // 8
        grid = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
        resample = Image.BICUBIC if texture == 1 else Image.NEAREST
        pattern = np.asarray(Image.fromarray(grid).resize((side, side), resample))
        strength = rng.uniform(8.0, 20.0)
    img = base + ramp[..., None] + (strength * pattern)[..., None] * weights
    img += (10.0 * rng.random((side, side), dtype=np.float32) - 5.0)[..., None]  # sensor grain
    return np.clip(img, 0, 255).astype(np.uint8)


TEXTURE_PERIOD = 6
"""Period in pixels of the class textures at the drawing scale (3 pixels in the image)."""
_TEXTURE_DARKEN = 0.45


@functools.lru_cache(maxsize=8)
def _textures(side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    half, p = TEXTURE_PERIOD // 2, TEXTURE_PERIOD
    patterns = [
        np.ones((side, side), dtype=bool),
        (y // half) % 2 == 0,
        (x // half) % 2 == 0,
        ((x + y) // half) % 2 == 0,
        ((x // half) + (y // half)) % 2 == 0,
        ~((x % p < half) & (y % p < half)),
        ((x - y) // half) % 2 == 0,
        (x % p >= 2) & (y % p >= 2),
    ]
    stacked = np.stack(patterns)
    stacked.flags.writeable = False
    return stacked


def class_texture(category: str, side: int) -> np.ndarray:
    """(side, side) bool mask (read-only) of the pixels a shape of ``category`` keeps at full brightness (the others
    are darkened): one pattern per class in :data:`CLASSES` order: solid, horizontal stripes, vertical stripes,
    diagonal stripes, checks, dots, anti-diagonal stripes, grid."""
    return _textures(side)[CLASSES.index(category)]


def _draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, scale: int, fill: Any, edge: Any) -> None:
    kind, geo = _shape_outline(obj.category, obj.pose)
    if kind == "polygon":
        draw.polygon([(x * scale, y * scale) for x, y in geo], fill=fill, outline=edge, width=2)
    elif kind == "chord":
        bbox, start, end = geo
        draw.chord([v * scale for v in bbox], start, end, fill=fill, outline=edge, width=2)
    elif kind == "ring":
        draw.ellipse([v * scale for v in geo], outline=fill, width=max(3, round(obj.pose.extent * 0.22 * scale)))
    else:
        draw.ellipse([v * scale for v in geo], fill=fill, outline=edge, width=2)


def render_scene(scene: Scene, rng: np.random.Generator, textured: bool = False) -> Image.Image:
    """The scene as an RGB image: textured background, shapes drawn at twice the size, then box-downsampled.
    ``textured``: each shape's pixels outside its class's :func:`class_texture` are darkened (no extra random
    draws, so the image is otherwise the same)."""
    scale = 2
    side = scene.width * scale
    canvas = Image.fromarray(_background(rng, scene.width)).resize((side, scene.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-18, 19, 3), 0, 255))
        _draw_shape(draw, obj, scale, rgb, tuple(int(v * 0.55) for v in rgb))
        if textured:
            x1, y1, x2, y2 = (max(0, min(side, int(v * scale) + d)) for v, d in zip(obj.box, (-2, -2, 3, 3)))
            mask = Image.new("L", canvas.size, 0)
            _draw_shape(ImageDraw.Draw(mask), obj, scale, 255, 255)
            dark = (np.asarray(mask)[y1:y2, x1:x2] > 0) & ~class_texture(obj.category, side)[y1:y2, x1:x2]
            region = np.asarray(canvas.crop((x1, y1, x2, y2))).copy()
            region[dark] = (region[dark] * _TEXTURE_DARKEN).astype(np.uint8)
            canvas.paste(Image.fromarray(region), (x1, y1))
    return canvas.reduce(scale)


# ------------------------------------------------------------------------------------------------ language
def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def _noun(category: Optional[str], rng: np.random.Generator, synonym_rate: float = _SYNONYM_RATE) -> str:
    if category is None:
        return _pick(rng, GENERIC_NOUNS)
    return _pick(rng, SYNONYMS[category]) if rng.random() < synonym_rate else category


def _noun_phrase(spec: ExpressionSpec, rng: np.random.Generator, synonym_rate: float = _SYNONYM_RATE) -> str:
    words = []
    if spec.size:
        words.append(_pick(rng, SIZE_WORDS[spec.size]) if rng.random() < 0.4 else spec.size)
    if spec.colour:
        words.append(spec.colour)
    words.append(_noun(spec.category, rng, synonym_rate))
    return " ".join(words)


def _location_words(location: Tuple[str, ...], rng: np.random.Generator, style: str) -> Tuple[str, str]:
    """(prefix adjective, trailing phrase) for ``location`` in ``style`` ('human' or 'caption')."""
    if len(location) == 2:
        pair = f"{location[0]} {location[1]}"
        tail = f"in the {pair} corner" + (" of the picture" if style == "caption" else "")
        return pair, tail if style == "caption" or rng.random() < 0.5 else f"at the {pair}"
    word = location[0]
    return _pick(rng, LOC_PREFIX[word]), _pick(rng, (LOC_CAPTION if style == "caption" else LOC_SUFFIX)[word])


def render_phrase(spec: ExpressionSpec, style: str, rng: np.random.Generator) -> str:
    """Text for ``spec``: ``style`` 'human' (RefCOCO-like, "the red circle on the left") or 'caption'
    (captioner-like, "a red circle sitting to the left of a blue square")."""
    base = dataclasses.replace(spec, location=(), relation=None)
    noun_phrase = _noun_phrase(base, rng)
    if style == "human":
        det = "the " if rng.random() < 0.65 else ""
        if spec.relation is not None:
            predicate, ref = spec.relation
            that = _pick(rng, (" that is", " which is")) if rng.random() < 0.2 else ""
            return (f"{det}{noun_phrase}{that} {_pick(rng, PRED_WORDS[predicate])} "
                    f"{det}{_noun_phrase(ref, rng)}")
        if spec.location:
            prefix, suffix = _location_words(spec.location, rng, style)
            return f"{det}{prefix} {noun_phrase}" if rng.random() < 0.45 else f"{det}{noun_phrase} {suffix}"
        return f"{det}{noun_phrase}"
    if style != "caption":
        raise ValueError(f"unknown phrase style {style!r}; valid: human, caption")
    subject = f"{_article(noun_phrase)} {noun_phrase}"
    if spec.relation is not None:
        predicate, ref = spec.relation
        ref_phrase = _noun_phrase(ref, rng)
        obj = f"{_article(ref_phrase)} {ref_phrase}"
        if rng.random() < 0.3:
            return f"there is {subject} {_pick(rng, PRED_WORDS[predicate])} {obj}"
        return f"{subject} {_pick(rng, CAPTION_VERBS)}{_pick(rng, PRED_WORDS[predicate])} {obj}"
    if spec.location:
        _, tail = _location_words(spec.location, rng, style)
        return f"there is {subject} {tail}" if rng.random() < 0.3 else f"{subject} {tail}"
    return _pick(rng, (f"there is {subject} in the picture", f"a picture of {subject}",
                       f"{subject} on a textured background", f"{subject} in the image"))


# ------------------------------------------------------------------------------------------ ground truth
_BASE_WEIGHT = {(True, False, False): 1.0, (True, True, False): 1.0, (True, False, True): 0.6,
                (True, True, True): 0.4, (False, True, False): 0.15, (False, False, True): 0.1,
                (False, True, True): 0.1}
_LOCATION_OPTIONS: Tuple[Tuple[str, ...], ...] = tuple((w,) for w in LOCATIONS) + tuple(
    (v, h) for v in ("top", "bottom") for h in ("left", "right"))


def _base_specs(obj: SceneObject) -> List[Tuple[ExpressionSpec, float]]:
    specs = []
    for (has_cat, has_colour, has_size), weight in _BASE_WEIGHT.items():
        specs.append((ExpressionSpec(category=obj.category if has_cat else None,
                                     colour=obj.colour if has_colour else None,
                                     size=obj.size if has_size else None), weight))
    return specs


_Cache = Dict[ExpressionSpec, List[int]]


def _unique(scene: Scene, target: SceneObject, spec: ExpressionSpec, cache: _Cache) -> bool:
    return _match(scene, spec, cache) == [target.id] and _clearly_true(scene, target, spec, cache)


def _reference_spec(scene: Scene, ref: SceneObject, cache: _Cache) -> Optional[ExpressionSpec]:
    """The shortest unique plain description of a reference object (category first, then with colour...)."""
    for spec in (ExpressionSpec(category=ref.category), ExpressionSpec(category=ref.category, colour=ref.colour),
                 ExpressionSpec(category=ref.category, size=ref.size),
                 ExpressionSpec(category=ref.category, colour=ref.colour, size=ref.size)):
        if _match(scene, spec, cache) == [ref.id]:
            return spec
    return None


def _candidate_specs(scene: Scene, target: SceneObject, kind: str, cache: _Cache) -> List[Tuple[ExpressionSpec, float]]:
    """Valid specs of ``kind`` ('category', 'attribute', 'spatial' or 'relation') for ``target``, weighted
    towards what people say: short, and using location/relation words when the words alone are ambiguous."""
    side = float(scene.width)
    anchors: List[Tuple[str, ExpressionSpec]] = []
    if kind == "relation":
        for ref in scene.objects:
            ref_spec = None if ref.id == target.id else _reference_spec(scene, ref, cache)
            if ref_spec is not None:
                anchors += [(p, ref_spec) for p in PREDICATES if relation_holds(target, ref, p, side, strict=True)]
    out: List[Tuple[ExpressionSpec, float]] = []
    for base, weight in _base_specs(target):
        plain = (base.colour is None and base.size is None)
        if kind == "category":
            if plain and _unique(scene, target, base, cache):
                out.append((base, 1.0))
        elif kind == "attribute":
            if not plain and _unique(scene, target, base, cache):
                out.append((base, weight))
        elif kind in ("spatial", "relation"):
            needed = 3.0 if len(_match(scene, base, cache)) > 1 else 1.0
            options = ([(ExpressionSpec(base.category, base.colour, base.size, location=loc),
                         0.3 if len(loc) == 2 else 1.0) for loc in _LOCATION_OPTIONS] if kind == "spatial" else
                       [(ExpressionSpec(base.category, base.colour, base.size, relation=a), 1.0) for a in anchors])
            out += [(spec, weight * needed * w) for spec, w in options if _unique(scene, target, spec, cache)]
        else:
            raise ValueError(f"unknown expression kind {kind!r}; valid: {', '.join(KINDS)}")
    return out


_CAPTION_SOURCES = (("attribute", 0.3), ("spatial", 0.3), ("relation", 0.4))


def _overspecify(spec: ExpressionSpec, kind: str, target: SceneObject, config: SyntheticConfig,
                 rng: np.random.Generator) -> Tuple[ExpressionSpec, str]:
    """A human ``spec`` with the words people add beyond the shortest unique description (the config's
    ``overspecify_*`` rates; no random draw at rate 0, so such worlds do not change), and its kind."""
    if config.overspecify_category > 0 and spec.category is None and rng.random() < config.overspecify_category:
        spec = dataclasses.replace(spec, category=target.category)
    if config.overspecify_colour > 0 and spec.colour is None and rng.random() < config.overspecify_colour:
        spec = dataclasses.replace(spec, colour=target.colour)
        if kind == "category":
            kind = "attribute"
    return spec, kind


def _expression(scene: Scene, target: SceneObject, kind: str, rng: np.random.Generator,
                cache: _Cache, config: SyntheticConfig) -> Optional[Expression]:
    if kind == "caption":
        weights = np.array([w for _, w in _CAPTION_SOURCES])
        order = rng.choice(len(weights), size=len(weights), replace=False, p=weights / weights.sum())
        specs = []
        for i in order:
            specs = _candidate_specs(scene, target, _CAPTION_SOURCES[i][0], cache)
            if specs:
                break
        style = "caption"
    else:
        specs, style = _candidate_specs(scene, target, kind, cache), "human"
    if not specs:
        return None
    weights = np.array([w for _, w in specs])
    spec = specs[int(rng.choice(len(specs), p=weights / weights.sum()))][0]
    if style == "human":
        spec, kind = _overspecify(spec, kind, target, config, rng)
    return Expression(render_phrase(spec, style, rng), target.id, spec, kind)


def add_expressions(scene: Scene, config: SyntheticConfig, split: str, index: int) -> Scene:
    """The scene with ``expressions_per_image`` ground-truth expressions about distinct targets where possible
    (testA/testB: only targets of the split's family)."""
    rng = _rng(config, "expressions", split, index)
    family = TEST_FAMILY.get(split)
    eligible = [o for o in scene.objects if family is None or o.family == family]
    order = [eligible[int(i)] for i in rng.permutation(len(eligible))]
    mix = np.array(config.expression_mix) / sum(config.expression_mix)
    expressions: List[Expression] = []
    cache: _Cache = {}
    for slot in range(config.expressions_per_image * 2):
        if len(expressions) == config.expressions_per_image:
            break
        target = order[slot % len(order)]
        kinds = [KINDS[int(i)] for i in rng.choice(len(KINDS), size=int((mix > 0).sum()), replace=False, p=mix)]
        for kind in kinds:
            expression = _expression(scene, target, kind, rng, cache, config)
            if expression is not None and all(e.phrase != expression.phrase for e in expressions):
                expressions.append(expression)
                break
    return dataclasses.replace(scene, expressions=tuple(expressions))


# --------------------------------------------------------------------------------------- upstream models
@dataclass(frozen=True)
class _Detection:
    box: Tuple[float, float, float, float]
    category: str
    score: float
    source: Optional[int]  # true object id, None for a spurious box
    kind: str  # "true", "wrong_class", "duplicate", "spurious"


def _confuse(category: str, u: float) -> str:
    """Another class: a sibling of the same family with probability 0.8, else one of the other family."""
    family = FAMILY_OF[category]
    if u < 0.8:
        siblings = [c for c in FAMILIES[family] if c != category]
        return siblings[min(int(u / 0.8 * len(siblings)), len(siblings) - 1)]
    other = FAMILIES[next(f for f in FAMILIES if f != family)]
    return other[min(int((u - 0.8) / 0.2 * len(other)), len(other) - 1)]


def _clip_box(box: Sequence[float], side: float) -> Tuple[float, float, float, float]:
    x1, y1, x2, y2 = (min(max(float(v), 0.0), side) for v in box)
    x2, y2 = max(x2, min(x1 + 2.0, side)), max(y2, min(y1 + 2.0, side))
    x1, y1 = min(x1, x2 - 2.0), min(y1, y2 - 2.0)
    return round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)


def _jitter(box: Sequence[float], z: np.ndarray, amount: float, side: float) -> Tuple[float, float, float, float]:
    w, h = box[2] - box[0], box[3] - box[1]
    return _clip_box([box[0] + z[0] * amount * w, box[1] + z[1] * amount * h,
                      box[2] + z[2] * amount * w, box[3] + z[3] * amount * h], side)


def simulate_detections(scene: Scene, config: SyntheticConfig, rng: np.random.Generator) -> List[_Detection]:
    """A noisy detector's output for ``scene``, sorted by score. The random draws do not depend on the noise
    levels, so a higher rate only adds noise."""
    side = float(scene.width)
    dets: List[_Detection] = []
    for obj in scene.objects:
        u, z, shift = rng.random(12), rng.standard_normal(4), rng.standard_normal(2)
        if u[0] < min(1.0, config.miss_rate * _MISS_SIZE_FACTOR[obj.size]):
            continue
        wrong = u[1] < config.class_error_rate
        category = _confuse(obj.category, u[2]) if wrong else obj.category
        box = _jitter(obj.box, z, config.box_jitter, side)
        score = 0.3 + 0.45 * u[3] if wrong else _SCORE_BASE[obj.size] + 0.19 * u[3]
        dets.append(_Detection(box, category, round(float(score), 3), obj.id, "wrong_class" if wrong else "true"))
        if u[4] < config.duplicate_rate:
            w, h = obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]
            sx, sy = (0.25 + 0.2 * u[5]) * w * np.sign(shift[0]), (0.25 + 0.2 * u[6]) * h * np.sign(shift[1])
            grow = 0.85 + 0.4 * u[7]
            cx, cy = (obj.box[0] + obj.box[2]) / 2 + sx, (obj.box[1] + obj.box[3]) / 2 + sy
            dup = _clip_box([cx - grow * w / 2, cy - grow * h / 2, cx + grow * w / 2, cy + grow * h / 2], side)
            dup_category = category if u[8] >= 0.3 else _confuse(obj.category, u[9])
            dets.append(_Detection(dup, dup_category, round(float(score * (0.55 + 0.4 * u[10])), 3), obj.id,
                                  "duplicate"))
    scale = _extent_scale(config)
    lo, hi = SIZE_EXTENT["small"][0] * scale, SIZE_EXTENT["large"][1] * scale
    for _ in range(_MAX_SPURIOUS):
        u = rng.random(7)
        if u[0] >= config.spurious_rate / _MAX_SPURIOUS:
            continue
        w = lo + (hi - lo) * u[1]
        h = w * (0.6 + 0.8 * u[2])
        x, y = u[3] * (side - w), u[4] * (side - h)
        category = CLASSES[min(int(u[5] * len(CLASSES)), len(CLASSES) - 1)]
        dets.append(_Detection(_clip_box([x, y, x + w, y + h], side), category, round(float(0.3 + 0.45 * u[6]), 3),
                               None, "spurious"))
    return sorted(dets, key=lambda d: -d.score)


def _other(options: Sequence[str], value: str, u: float) -> str:
    rest = [o for o in options if o != value]
    return rest[min(int(u * len(rest)), len(rest) - 1)]


def simulate_attributes(scene: Scene, dets: Sequence[_Detection], config: SyntheticConfig,
                        rng: np.random.Generator) -> Tuple[List[Dict[str, Any]], int]:
    """Attribute predictions (a colour per detected box, sometimes a size) and how many are wrong."""
    side = float(scene.width)
    out, wrong_count = [], 0
    for det in dets:
        u, z = rng.random(12), rng.standard_normal(4)
        if u[0] < config.miss_rate:
            continue
        box = _jitter(det.box, z, config.box_jitter * 0.3, side)
        category = _confuse(det.category, u[2]) if u[1] < config.class_error_rate else det.category
        true = scene.obj(det.source) if det.source is not None else None
        colour = true.colour if true else list(COLOURS)[min(int(u[3] * len(COLOURS)), len(COLOURS) - 1)]
        wrong = u[4] < config.wrong_attribute_rate
        if wrong:
            colour = _other(list(COLOURS), colour, u[5])
        wrong_count += int(wrong and true is not None)
        out.append({"box": list(box), "class": category, "attribute": colour,
                    "score": round(float(0.3 + 0.45 * u[6] if wrong else 0.45 + 0.5 * u[6]), 3)})
        if u[7] < _SIZE_ATTRIBUTE_RATE:
            size = true.size if true else SIZES[min(int(u[8] * 3), 2)]
            wrong_size = u[9] < config.wrong_attribute_rate
            wrong_count += int(wrong_size and true is not None)
            out.append({"box": list(box), "class": category,
                        "attribute": _other(SIZES, size, u[10]) if wrong_size else size,
                        "score": round(float(0.2 + 0.4 * u[11]), 3)})
    return out, wrong_count


def _det_as_object(det: _Detection) -> SceneObject:
    """A detection as an object, for the geometry of :func:`relation_holds` (only its box is read)."""
    return SceneObject(-1, det.category, "", "", det.box, Pose(0, 0, 0, 0, 0))


def _wrong_predicate(subject: SceneObject, ref: SceneObject, side: float, u: float) -> str:
    """A predicate that does not hold even loosely (opposite directions exclude each other, so there is one)."""
    false = [p for p in PREDICATES if not relation_holds(subject, ref, p, side)]
    return false[min(int(u * len(false)), len(false) - 1)]


def simulate_scene_graph(scene: Scene, dets: Sequence[_Detection], config: SyntheticConfig,
                         rng: np.random.Generator) -> Tuple[List[Dict[str, Any]], int]:
    """Scene-graph triplets between detected boxes (predicates from their geometry, some wrong), best first."""
    side = float(scene.width)
    triplets: List[Tuple[float, bool, Dict[str, Any]]] = []
    if not dets:
        return [], 0
    ious = box_iou(torch.tensor([d.box for d in dets], dtype=torch.float64),
                   torch.tensor([d.box for d in dets], dtype=torch.float64))
    for i, a in enumerate(dets):
        for j, b in enumerate(dets):
            if i == j or (a.source is not None and a.source == b.source) or float(ious[i, j]) > 0.3:
                continue
            u = rng.random(4)
            sa, sb = _det_as_object(a), _det_as_object(b)
            holding = [p for p in PREDICATES if relation_holds(sa, sb, p, side, strict=True)]
            if not holding:
                continue
            predicate = holding[min(int(u[0] * len(holding)), len(holding) - 1)]
            wrong = u[1] < config.relation_error_rate
            if wrong:
                predicate = _wrong_predicate(sa, sb, side, u[2])
            score = float(0.3 + 0.4 * u[3] if wrong else 0.45 + 0.5 * u[3])
            triplets.append((round(score, 3), wrong, {
                "subject": {"class": a.category, "box": list(a.box)}, "predicate": predicate,
                "object": {"class": b.category, "box": list(b.box)}, "score": round(score, 3)}))
    triplets.sort(key=lambda t: -t[0])
    kept = triplets[:config.triplets_per_image]
    return [t[2] for t in kept], int(sum(t[1] for t in kept))


def _grid_location(obj: SceneObject, side: float) -> Tuple[str, ...]:
    h = "left" if obj.cx < side / 3 else "right" if obj.cx > 2 * side / 3 else ""
    v = "top" if obj.cy < side / 3 else "bottom" if obj.cy > 2 * side / 3 else ""
    return tuple(w for w in (v, h) if w) or ("middle",)


def simulate_captions(scene: Scene, config: SyntheticConfig, rng: np.random.Generator) -> Tuple[List[str], int]:
    """Captioner output: salient (large) objects are described first; some captions carry an error (a wrong
    colour, class or relation)."""
    side = float(scene.width)
    areas = np.array([o.area for o in scene.objects])
    captions, errors = [], 0
    for _ in range(config.captions_per_image):
        subject = scene.objects[int(rng.choice(len(areas), p=areas / areas.sum()))]
        u = rng.random(6)
        spec = ExpressionSpec(category=subject.category, colour=subject.colour if u[0] < 0.9 else None,
                              size=subject.size if u[1] < 0.35 else None)
        partners = [(p, o) for o in scene.objects if o.id != subject.id for p in PREDICATES
                    if relation_holds(subject, o, p, side, strict=True)]
        form = int(u[2] * 3)  # 0: relation, 1: location, 2: a list of two objects
        if form == 0 and not partners:
            form = 1
        predicate, ref = partners[int(rng.integers(len(partners)))] if form == 0 else ("", None)
        if u[3] < config.caption_error_rate:
            errors += 1
            error = int(u[4] * 3)  # 0: colour, 1: class, 2: relation
            error = 0 if error == 2 and form != 0 else error
            error = 1 if error == 0 and spec.colour is None else error
            if error == 0:
                spec = dataclasses.replace(spec, colour=_other(list(COLOURS), subject.colour, u[5]))
            elif error == 1:
                spec = dataclasses.replace(spec, category=_confuse(subject.category, u[5] * 0.8))
            else:
                predicate = _wrong_predicate(subject, ref, side, u[5])
        if form == 0:
            ref_spec = ExpressionSpec(category=ref.category, colour=ref.colour if rng.random() < 0.7 else None)
            caption = render_phrase(dataclasses.replace(spec, relation=(predicate, ref_spec)), "caption", rng)
        elif form == 1:
            caption = render_phrase(dataclasses.replace(spec, location=_grid_location(subject, side)), "caption",
                                    rng)
        else:
            others = [o for o in scene.objects if o.id != subject.id]
            second = others[int(rng.integers(len(others)))]
            first = _noun_phrase(spec, rng)
            second_phrase = _noun_phrase(ExpressionSpec(category=second.category, colour=second.colour), rng)
            caption = f"{_article(first)} {first} and {_article(second_phrase)} {second_phrase}"
        captions.append(caption)
    return captions, errors


# ----------------------------------------------------------------------------------------- pretrain corpus
def pretrain_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming every object of the scene with its size, colour, shape and place in the image."""
    side = float(scene.width)
    parts = []
    for i in rng.permutation(len(scene.objects)):
        obj = scene.objects[int(i)]
        words = _noun_phrase(ExpressionSpec(obj.category, obj.colour, obj.size), rng, synonym_rate=0.2)
        location = _grid_location(obj, side)
        place = (f"at the {location[0]} {location[1]}" if len(location) == 2 else
                 "in the center" if location == ("middle",) else
                 f"on the {location[0]}" if location[0] in ("left", "right") else f"at the {location[0]}")
        parts.append(f"{_article(words)} {words} {place}")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


# ----------------------------------------------------------------------------------------------- the world
@dataclass
class World:
    """The generated world in memory: scenes (with expressions) per split and the pretraining pairs."""
    config: SyntheticConfig
    splits: Dict[str, List[Scene]]
    pretrain: List[Tuple[Scene, str]]


def image_names(config: SyntheticConfig) -> Dict[str, List[str]]:
    """File names per split: ``syn_000001.jpg`` ... numbered through train, val, testA, testB."""
    names, start = {}, 1
    for split, n in config.split_sizes().items():
        names[split] = [f"syn_{start + i:06d}.jpg" for i in range(n)]
        start += n
    return names


def pretrain_names(config: SyntheticConfig) -> List[str]:
    """File names of the pretraining corpus: ``pre_000001.jpg`` ..."""
    return [f"pre_{i + 1:06d}.jpg" for i in range(config.n_pretrain)]


def world_item(config: SyntheticConfig, split: str, index: int, name: str) -> Any:
    """Scene ``index`` of ``split`` with its expressions, or for ``split`` 'pretrain' a (scene, caption) pair;
    a function of (config, split, index) only, so any partition of the work gives the same world."""
    scene = sample_scene(config, split, index, name)
    if split == "pretrain":
        return scene, pretrain_caption(scene, _rng(config, "pretrain", "pretrain", index))
    return add_expressions(scene, config, split, index)


def _all_names(config: SyntheticConfig) -> Dict[str, List[str]]:
    return {**image_names(config), "pretrain": pretrain_names(config)}


def _assemble(config: SyntheticConfig, items: Dict[str, List[Any]]) -> World:
    return World(config, {split: items[split] for split in image_names(config)}, items["pretrain"])


def build_world(config: SyntheticConfig) -> World:
    """Every scene and expression of ``config`` (no files written)."""
    return _assemble(config, {split: [world_item(config, split, i, name) for i, name in enumerate(names)]
                              for split, names in _all_names(config).items()})


def _write_chunk(config: SyntheticConfig, split: str, start: int, names: Sequence[str], folder: str
                 ) -> List[Tuple[Any, Optional[ImageUpstream]]]:
    """Build items ``start .. start + len(names) - 1`` of ``split``, write their images into ``folder`` and, for the
    train split, simulate what the upstream models say about them."""
    items = []
    for index, name in enumerate(names, start):
        item = world_item(config, split, index, name)
        scene = item[0] if split == "pretrain" else item
        image = render_scene(scene, _rng(config, "render", split, index), config.class_textures)
        atomic_write_bytes(os.path.join(folder, name), _jpeg_bytes(image, config.jpeg_quality), durable=False)
        items.append((item, simulate_image_upstream(scene, config, index) if split == "train" else None))
    return items


def write_world(config: SyntheticConfig, paths: Dict[str, str], workers: int = 1
                ) -> Tuple[World, List[ImageUpstream]]:
    """Build the world, write its images and simulate the upstream outputs of its training images, in ``workers``
    processes (spawned; each scene, image and upstream output depends only on its own seeded draws, so the files are
    the same for any ``workers``). Worlds under ``_PARALLEL_MIN_IMAGES`` images are written in this process, where a
    pool's start-up would cost more than it saves. Returns the world and the training images' upstream outputs."""
    names = _all_names(config)
    total = sum(map(len, names.values()))
    jobs = []
    chunk = max(1, math.ceil(total / (4 * workers)))
    for split, split_names in names.items():
        folder = paths["pretrain_images" if split == "pretrain" else "images"]
        jobs += [(config, split, start, split_names[start:start + chunk], folder)
                 for start in range(0, len(split_names), chunk)]
    chunks = None
    if workers > 1 and total >= _PARALLEL_MIN_IMAGES:
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                chunks = list(pool.map(_write_chunk, *zip(*jobs)))
        except BrokenProcessPool as exc:  # e.g. a __main__ that spawned processes cannot import (python - < file)
            print(f"synthetic world: worker processes failed ({exc}); writing it in this process", file=sys.stderr)
    if chunks is None:
        chunks = [_write_chunk(*job) for job in jobs]
    items: Dict[str, List[Any]] = {split: [] for split in names}
    upstream: List[ImageUpstream] = []
    for job, written in zip(jobs, chunks):
        items[job[1]].extend(item for item, _ in written)
        upstream.extend(image for _, image in written if image is not None)
    return _assemble(config, items), upstream


UPSTREAM_COUNTS = ("objects", "detections", "missed", "spurious", "duplicates", "wrong_class", "attributes",
                   "wrong_attributes", "triplets", "wrong_triplets", "captions", "wrong_captions")


@dataclass
class ImageUpstream:
    """What the simulated upstream models say about one training image: its entry in each payload, its noise
    counts (``UPSTREAM_COUNTS``) and the (detected, true) box pairs of its correctly placed detections."""
    entries: Dict[str, Dict[str, Any]]
    counts: Dict[str, int]
    true_pairs: List[Tuple[Tuple[float, ...], Tuple[float, ...]]]


def simulate_image_upstream(scene: Scene, config: SyntheticConfig, index: int) -> ImageUpstream:
    """The upstream outputs of training image ``index`` (each model draws from its own stream of that image)."""
    dets = simulate_detections(scene, config, _rng(config, "detections", "train", index))
    attributes, wrong_attr = simulate_attributes(scene, dets, config, _rng(config, "attributes", "train", index))
    triplets, wrong_trip = simulate_scene_graph(scene, dets, config, _rng(config, "scene_graphs", "train", index))
    captions, wrong_cap = simulate_captions(scene, config, _rng(config, "captions", "train", index))
    entries = {"detections": {"image": scene.image, "width": scene.width, "height": scene.height,
                              "objects": [{"box": list(d.box), "class": d.category, "score": d.score}
                                          for d in dets]},
               "attributes": {"image": scene.image, "objects": attributes},
               "scene_graphs": {"image": scene.image, "triplets": triplets},
               "captions": {"image": scene.image, "captions": captions}}
    found = {d.source for d in dets if d.kind in ("true", "wrong_class")}
    counts = {"objects": len(scene.objects), "detections": len(dets), "missed": len(scene.objects) - len(found),
              "spurious": sum(d.kind == "spurious" for d in dets),
              "duplicates": sum(d.kind == "duplicate" for d in dets),
              "wrong_class": sum(d.kind == "wrong_class" for d in dets),
              "attributes": len(attributes), "wrong_attributes": wrong_attr, "triplets": len(triplets),
              "wrong_triplets": wrong_trip, "captions": len(captions), "wrong_captions": wrong_cap}
    pairs = [(d.box, scene.obj(d.source).box) for d in dets if d.kind in ("true", "wrong_class")]
    return ImageUpstream(entries, counts, pairs)


def combine_upstream(images: Sequence[ImageUpstream]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The upstream JSON payloads (``detections``, ``attributes``, ``scene_graphs``, ``captions``,
    ``synonyms``) in ``docs/upstream_formats.md`` formats, and noise stats, from the per-image outputs in split
    order."""
    counts: Dict[str, Any] = {key: sum(image.counts[key] for image in images) for key in UPSTREAM_COUNTS}
    pairs = [pair for image in images for pair in image.true_pairs]
    if pairs:
        ious = elementwise_iou(torch.tensor([p for p, _ in pairs], dtype=torch.float64),
                               torch.tensor([g for _, g in pairs], dtype=torch.float64))
        counts["mean_iou_detected"] = round(float(ious.mean()), 4)
    payloads: Dict[str, Any] = {name: {"images": [image.entries[name] for image in images]}
                                for name in ("detections", "attributes", "scene_graphs", "captions")}
    payloads["synonyms"] = {c: list(SYNONYMS[c]) for c in CLASSES}
    return payloads, counts


# ------------------------------------------------------------------------------------------------- summary
def _prior_accuracy(scenes: Sequence[Scene], box_of: Callable[[Scene], Sequence[float]]) -> float:
    """Acc@0.5 of a language-free guess ``box_of(scene)`` for every expression of ``scenes``."""
    preds, gts = [], []
    for scene in scenes:
        for e in scene.expressions:
            preds.append(box_of(scene))
            gts.append(scene.obj(e.target).box)
    if not preds:
        return 0.0
    ious = elementwise_iou(torch.tensor(preds, dtype=torch.float64), torch.tensor(gts, dtype=torch.float64))
    return round(float((ious >= 0.5).double().mean()), 4)


def _summary(world: World, upstream_counts: Dict[str, Any]) -> Dict[str, Any]:
    """Counts per split, expression kinds, target families, language-free priors and the upstream noise."""
    config = world.config
    train_targets = [s.obj(e.target) for s in world.splits["train"] for e in s.expressions]
    mw = float(np.median([o.box[2] - o.box[0] for o in train_targets]))
    mh = float(np.median([o.box[3] - o.box[1] for o in train_targets]))
    side = float(config.image_size)
    centre = (side / 2 - mw / 2, side / 2 - mh / 2, side / 2 + mw / 2, side / 2 + mh / 2)
    splits = {}
    for split, scenes in world.splits.items():
        expressions = [e for s in scenes for e in s.expressions]
        splits[split] = {
            "images": len(scenes), "expressions": len(expressions),
            "objects": sum(len(s.objects) for s in scenes),
            "kinds": {k: sum(e.kind == k for e in expressions) for k in KINDS},
            "target_families": {f: sum(s.obj(e.target).family == f for s in scenes for e in s.expressions)
                                for f in FAMILIES},
            "centre_box_acc": _prior_accuracy(scenes, lambda s: centre),
            "largest_object_acc": _prior_accuracy(scenes, lambda s: max(s.objects, key=lambda o: o.area).box),
        }
    return {"dataset": DATASET, "config_hash": config.config_hash(), "splits": splits,
            "upstream": upstream_counts, "pretrain_pairs": len(world.pretrain)}


def vocabulary() -> Dict[str, Any]:
    """Classes, families, colours, sizes, predicates and location words of the world."""
    return {"classes": list(CLASSES), "families": {f: list(m) for f, m in FAMILIES.items()},
            "test_families": dict(TEST_FAMILY), "colours": {k: list(v) for k, v in COLOURS.items()},
            "sizes": list(SIZES), "size_extent_px_at_128": {k: list(v) for k, v in SIZE_EXTENT.items()},
            "predicates": list(PREDICATES), "locations": list(LOCATIONS), "expression_kinds": list(KINDS),
            "synonyms": {c: list(SYNONYMS[c]) for c in CLASSES}}


# ------------------------------------------------------------------------------------------------- writing
def _json_bytes(obj: Any, indent: Optional[int] = None) -> bytes:
    return (json.dumps(obj, indent=indent, separators=None if indent else (",", ":")) + "\n").encode()


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _split_samples(scenes: Sequence[Scene]) -> List[Tuple[str, str, List[float], str, str]]:
    """The split file's samples. Strings are interned: equal strings are one object, so the pickled file does not
    depend on which process built which scene (pickle writes a repeated object as a reference)."""
    samples = []
    for scene in scenes:
        stem = os.path.splitext(scene.image)[0]
        for e in scene.expressions:
            x1, y1, x2, y2 = scene.obj(e.target).box
            samples.append((sys.intern(scene.image), sys.intern(f"{stem}_{e.target}"), [x1, y1, x2 - x1, y2 - y1],
                            sys.intern(e.phrase), sys.intern(e.kind)))
    return samples


def _annotations(world: World) -> Dict[str, Any]:
    return {split: [{"image": s.image, "width": s.width, "height": s.height,
                     "objects": [{"id": o.id, "class": o.category, "colour": o.colour, "size": o.size,
                                  "box": list(o.box)} for o in s.objects],
                     "expressions": [{"phrase": e.phrase, "target": e.target, "kind": e.kind,
                                      "spec": e.spec.to_dict()} for e in s.expressions]}
                    for s in scenes]
            for split, scenes in world.splits.items()}


def output_paths(data_root: str, split_root: str) -> Dict[str, str]:
    """Where :func:`generate` writes (folders and files)."""
    root = os.path.join(data_root, DATASET)
    paths = {"root": root, "images": os.path.join(root, "images"), "upstream": os.path.join(root, "upstream"),
             "pretrain": os.path.join(root, "pretrain"),
             "pretrain_images": os.path.join(root, "pretrain", "pretrain_images"),
             "caption_corpus": os.path.join(root, "pretrain", "caption_corpus.json"),
             "annotations": os.path.join(root, "annotations.json"), "world": os.path.join(root, "world.json")}
    for name in ("detections", "attributes", "scene_graphs", "captions", "synonyms"):
        paths[name] = os.path.join(root, "upstream", f"{name}.json")
    for split in SPLITS:
        paths[f"split_{split}"] = os.path.join(split_root, DATASET, f"{DATASET}_{split}.pth")
    return paths


def _expected_files(paths: Dict[str, str], config: SyntheticConfig) -> List[str]:
    files = [p for k, p in paths.items() if k not in ("root", "images", "upstream", "pretrain", "pretrain_images")]
    files += [os.path.join(paths["images"], n) for names in image_names(config).values() for n in names]
    files += [os.path.join(paths["pretrain_images"], n) for n in pretrain_names(config)]
    return files


def _cached_summary(paths: Dict[str, str], config: SyntheticConfig) -> Optional[Dict[str, Any]]:
    try:
        with open(paths["world"]) as f:
            world = json.load(f)
    except (OSError, ValueError):
        return None
    if world.get("config_hash") != config.config_hash() or not all(
            os.path.isfile(p) for p in _expected_files(paths, config)):
        return None
    return world.get("summary")


def _remove_stale_images(folder: str, keep: set) -> None:
    """Delete this generator's images (``syn_*.jpg`` / ``pre_*.jpg``) in ``folder`` that ``keep`` lacks."""
    for name in sorted(os.listdir(folder)):
        if _IMAGE_RE.match(name) and name not in keep:
            os.remove(os.path.join(folder, name))


def generate(data_root: str, split_root: str, config: Optional[SyntheticConfig] = None,
             force: bool = False, workers: Optional[int] = None) -> Dict[str, Any]:
    """Write the synthetic world for ``config`` (default: ``SyntheticConfig()``) and return its summary.

    Does nothing but return the stored summary when ``world.json`` holds the same config hash and every file
    exists (unless ``force``). Images this generator wrote for another config and not part of this one are
    removed. ``world.json`` is written last, so it only exists for a complete world. ``workers``: processes that
    build and render the scenes (default: the CPUs available); the files do not depend on it.
    """
    config = config or SyntheticConfig()
    start = time.perf_counter()
    paths = output_paths(data_root, split_root)
    cached = None if force else _cached_summary(paths, config)
    if cached is not None:
        return {**cached, "cached": True, "paths": paths, "seconds": round(time.perf_counter() - start, 2)}
    if os.path.exists(paths["world"]):  # from here on the folder is incomplete until world.json is rewritten
        os.remove(paths["world"])
    os.makedirs(paths["images"], exist_ok=True)
    os.makedirs(paths["pretrain_images"], exist_ok=True)
    world, upstream = write_world(config, paths, available_cpus() if workers is None else workers)
    _remove_stale_images(paths["images"], {s.image for scenes in world.splits.values() for s in scenes})
    _remove_stale_images(paths["pretrain_images"], {s.image for s, _ in world.pretrain})
    payloads, counts = combine_upstream(upstream)
    for name, payload in payloads.items():
        atomic_write_bytes(paths[name], _json_bytes(payload))
    corpus = {"image_dir": "pretrain_images",
              "pairs": [{"image": scene.image, "caption": caption} for scene, caption in world.pretrain]}
    atomic_write_bytes(paths["caption_corpus"], _json_bytes(corpus))
    for split, scenes in world.splits.items():
        atomic_torch_save(_split_samples(scenes), paths[f"split_{split}"])
    atomic_write_bytes(paths["annotations"], _json_bytes(_annotations(world)))
    summary = _summary(world, counts)
    atomic_write_bytes(paths["world"], _json_bytes({"dataset": DATASET, "generator_version": GENERATOR_VERSION,
                                               "config_hash": config.config_hash(), "config": config.to_dict(),
                                               "vocabulary": vocabulary(), "summary": summary}, indent=2))
    return {**summary, "cached": False, "paths": paths, "seconds": round(time.perf_counter() - start, 2)}


# ----------------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic",
                                     description="Generate the synthetic referring world (dataset 'synthetic').")
    parser.add_argument("--data_root", required=True, help="images, upstream outputs and corpus go under "
                                                           "DATA_ROOT/synthetic")
    parser.add_argument("--split_root", required=True, help="split files go under SPLIT_ROOT/synthetic")
    parser.add_argument("--force", action="store_true", help="regenerate even when world.json matches")
    parser.add_argument("--workers", type=int, help="processes that build and render the scenes (default: the CPUs "
                                                    "available; the files do not depend on it)")
    for f in dataclasses.fields(SyntheticConfig):
        if f.name == "expression_mix":
            parser.add_argument("--expression_mix", type=lambda s: tuple(float(v) for v in s.split(",")),
                                default=f.default, help=f"comma-separated weights for {', '.join(KINDS)}")
        elif isinstance(f.default, bool):
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """CLI entry: generate and print the summary as JSON."""
    args = _parser().parse_args(argv)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)}
    try:
        config = SyntheticConfig(**fields)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"error: --workers {args.workers}: must be at least 1")
    summary = generate(args.data_root, args.split_root, config, force=args.force, workers=args.workers)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
