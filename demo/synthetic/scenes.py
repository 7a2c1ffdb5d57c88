"""Scenes of the synthetic world: the scene model (shapes, poses, expression meanings), what an expression means
in a scene (``describe_matches``, ``relation_holds``) and the seeded sampling of a scene's shapes."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from demo.synthetic.config import (CLASSES, COLOURS, FAMILIES, FAMILY_OF, LOCATIONS, PREDICATES, SIZE_EXTENT, SIZES,
                                   TEST_FAMILY, SyntheticConfig, rng_for)

# Geometry thresholds, as fractions of the image side: (loose, strict). describe_matches uses the loose ones
# (anything that might be read as matching counts), the generator demands the strict ones of the target.
_LOC_MARGIN = (0.06, 0.12)
_ABS_SIDE = (0.45, 0.38)
_MIDDLE_BAND = (0.15, 0.10)
_REL_MARGIN = (0.06, 0.10)
_REL_RATIO = (1.0, 1.5)
_NEXT_GAP = (0.10, 0.05)
_MAX_OVERLAP = 0.15
_SAME_COLOUR_RATE = 0.4
_FAMILY_BIAS = 0.65


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
    return matches(scene, spec, {})


def matches(scene: Scene, spec: ExpressionSpec, cache: Dict[ExpressionSpec, List[int]]) -> List[int]:
    """:func:`describe_matches` with a per-scene memo (``cache``) for the generator's many queries."""
    hit = cache.get(spec)
    if hit is not None:
        return hit
    side = float(max(scene.width, scene.height))
    candidates = [o for o in scene.objects if _base_match(o, spec)]
    if spec.relation is not None:
        predicate, ref_spec = spec.relation
        refs = [scene.obj(i) for i in matches(scene, ref_spec, cache)]
        candidates = [o for o in candidates
                      if any(r.id != o.id and relation_holds(o, r, predicate, side) for r in refs)]
    if spec.location:
        pool = list(candidates)
        candidates = [o for o in pool if all(_location_holds(o, pool, w, side, False) for w in spec.location)]
    cache[spec] = [o.id for o in candidates]
    return cache[spec]


def clearly_true(scene: Scene, target: SceneObject, spec: ExpressionSpec,
                  cache: Dict[ExpressionSpec, List[int]]) -> bool:
    """The strict reading of ``spec`` holds for ``target`` (demanded on top of uniqueness when generating)."""
    side = float(max(scene.width, scene.height))
    if spec.relation is not None:
        predicate, ref_spec = spec.relation
        refs = matches(scene, ref_spec, cache)
        if len(refs) != 1 or not relation_holds(target, scene.obj(refs[0]), predicate, side, strict=True):
            return False
    if spec.location:
        base = ExpressionSpec(spec.category, spec.colour, spec.size, (), spec.relation)
        pool = [scene.obj(i) for i in matches(scene, base, cache)]
        return all(_location_holds(target, pool, w, side, True) for w in spec.location)
    return True


def shape_outline(category: str, pose: Pose) -> Tuple[str, Any]:
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
    kind, geo = shape_outline(category, pose)
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


def extent_scale(config: SyntheticConfig) -> float:
    """Factor from :data:`SIZE_EXTENT` (px at 128 px images) to this world's shape extents."""
    return config.image_size / 128.0 * config.object_scale


def _place(rng: np.random.Generator, config: SyntheticConfig, category: str, size: str,
           placed: Sequence[SceneObject]) -> Optional[Tuple[Tuple[float, float, float, float], Pose]]:
    side = config.image_size
    lo, hi = SIZE_EXTENT[size]
    extent = rng.uniform(lo, hi) * extent_scale(config) * (1.2 if category in ("ellipse", "semicircle") else 1.0)
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
    rng = rng_for(config, "scene", split, index)
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


def grid_location(obj: SceneObject, side: float) -> Tuple[str, ...]:
    """Where ``obj`` is on a 3x3 grid of the image: (vertical, horizontal) words, one of them, or ``("middle",)``."""
    h = "left" if obj.cx < side / 3 else "right" if obj.cx > 2 * side / 3 else ""
    v = "top" if obj.cy < side / 3 else "bottom" if obj.cy > 2 * side / 3 else ""
    return tuple(w for w in (v, h) if w) or ("middle",)
