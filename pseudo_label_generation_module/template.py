"""Template pseudo-language labels (Pseudo-Q's rules, docs/method.md#pseudo-language-label-sources) from detections
and attributes.

Per image, each rule is a pure function over ``SceneObject`` lists:

1. ``split_groups``: people (``person_classes``), clothing (``*_classes``) and things (everything else).
2. ``remove_tiny``: people and things under ``min_area_fraction`` of the image area are dropped (clothing is
   exempt, as in Pseudo-Q).
3. ``remove_duplicates``: within each group, a box is dropped when a more confident box (ties: the earlier one)
   overlaps it with IoU > ``dedup_iou`` (Pseudo-Q's pairwise rule, not greedy NMS).
4. ``attach_attributes``: an object takes the attribute of the same-class attributed box that overlaps it most,
   when that IoU is > ``attr_iou`` and the attribute score > ``attr_score``.
5. ``attach_clothing``: a clothing box goes to the person containing the largest share of it, when that share is
   > ``clothing_inside``; hats must sit in the top part of the person, pants in the bottom half.
6. ``assign_spatial_words``: among objects of the same class, left/right (centres more than ``horizontal_px``
   apart; with 3 objects the other is 'middle', with more the others go by image quarters), top/bottom (likewise
   with ``vertical_px``), front/behind (area ratios to the largest: < ``behind_ratio`` is 'behind', the largest
   'front', others > ``front_ratio`` 'front').
7. ``select_top``: the ``top_n`` most confident objects, people first.
8. ``object_expressions``: every ``forms`` template filled with the object's noun phrase (attribute + class),
   spatial words and clothing; ``sample_expressions`` keeps up to ``per_image`` of an image's candidates, drawn
   with a random generator seeded by (seed, image name), so the output does not depend on image order.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from pseudo_label_generation_module import _cli
from pseudo_label_generation_module.geometry import Box, area, center, clip, inside_fraction, iou_matrix
from pseudo_label_generation_module.inputs import (AttributeBox, ImageDetections, class_names, load_attributes,
                                                   load_detections)
from pseudo_label_generation_module.samples import is_trainable_box, make_sample
from utils.cli import run_cli

SPATIAL_PHRASES = {
    "left": "on the left", "right": "on the right", "middle": "in the middle", "top": "at the top",
    "bottom": "at the bottom", "front": "in the front", "behind": "in the back",
}
"""Spatial word -> the phrase used by the ``{sp}`` placeholder."""

DEFAULT_FORMS = (
    "{np}",              # red car
    "{s} {np}",          # left red car
    "{np} {sp}",         # red car on the left
    "{np} {s}",          # red car left (Pseudo-Q's bare form)
    "{np} in {c}",       # man in white shirt
    "{c} {np}",          # white shirt man (Pseudo-Q)
    "{np} in {c} {sp}",  # man in white shirt on the right
    "{s} {np} in {c}",   # right man in white shirt
    "{np} {sp} in {c}",  # man on the right in white shirt
)
"""Expression forms: ``{np}`` noun phrase, ``{s}`` spatial word, ``{sp}`` spatial phrase, ``{c}`` clothing."""

_PLACEHOLDERS = frozenset({"np", "s", "sp", "c"})


@dataclass(frozen=True)
class TemplateConfig:
    """Every rule threshold, with Pseudo-Q's published defaults."""
    min_area_fraction: float = field(default=0.015625, metadata={
        "help": "drop people/things whose box is under this fraction of the image area"})
    dedup_iou: float = field(default=0.4, metadata={
        "help": "near-duplicate boxes (IoU above this) keep only the more confident"})
    attr_iou: float = field(default=0.5, metadata={
        "help": "an attributed box of the same class must overlap the object with IoU above this"})
    attr_score: float = field(default=0.3, metadata={"help": "minimum (exclusive) attribute confidence"})
    clothing_inside: float = field(default=0.75, metadata={
        "help": "share of a clothing box that must lie inside the person (exclusive)"})
    hat_top_fraction: float = field(default=0.75, metadata={
        "help": "a hat's centre must be above this fraction of the person's height, measured from the bottom"})
    pants_bottom_fraction: float = field(default=0.5, metadata={
        "help": "pants' centre must be below this fraction of the person's height, measured from the bottom"})
    horizontal_px: float = field(default=50.0, metadata={
        "help": "left/right only when same-class centres span more than this many pixels"})
    vertical_px: float = field(default=50.0, metadata={
        "help": "top/bottom only when same-class centres span more than this many pixels"})
    side_fraction: float = field(default=0.25, metadata={
        "help": "with more objects, the others in this outer fraction of the image get left/right/top/bottom"})
    behind_ratio: float = field(default=0.4, metadata={
        "help": "objects under this fraction of the largest same-class area are 'behind' (the largest 'front')"})
    front_ratio: float = field(default=0.8, metadata={
        "help": "other objects above this fraction of the largest area are also 'front'"})
    top_n: int = field(default=3, metadata={"help": "objects described per image (most confident, people first)"})
    per_image: int = field(default=10, metadata={"help": "expressions kept per image (sampled)"})
    person_classes: Tuple[str, ...] = field(default=(
        "person", "people", "man", "men", "woman", "women", "boy", "boys", "girl", "girls", "child", "children",
        "kid", "kids", "lady", "ladies", "guy", "player", "players", "baby", "toddler", "adult", "couple", "bride",
        "policeman", "mother", "skier", "surfer"), metadata={"help": "classes that are people"})
    hat_classes: Tuple[str, ...] = field(default=(
        "hat", "cap", "helmet", "beanie", "headband", "visor", "goggles", "sunglasses", "glasses", "scarf"),
        metadata={"help": "clothing worn on the head"})
    shirt_classes: Tuple[str, ...] = field(default=(
        "shirt", "t-shirt", "jacket", "coat", "sweater", "hoodie", "vest", "jersey", "dress", "uniform", "suit",
        "blouse"), metadata={"help": "clothing worn on the upper body"})
    pants_classes: Tuple[str, ...] = field(default=(
        "pants", "pant", "jeans", "jean", "shorts", "short", "skirt", "trousers", "slacks", "overalls", "tights"),
        metadata={"help": "clothing worn on the legs"})
    shoes_classes: Tuple[str, ...] = field(default=(
        "shoes", "shoe", "boots", "boot", "sneakers", "sneaker", "sandals", "sandal", "socks", "sock", "cleats"),
        metadata={"help": "footwear"})
    forms: Tuple[str, ...] = field(default=DEFAULT_FORMS, metadata={
        "help": "expression forms with {np} {s} {sp} {c} placeholders"})

    def __post_init__(self) -> None:
        for name in ("min_area_fraction", "dedup_iou", "attr_iou", "attr_score", "clothing_inside",
                     "hat_top_fraction", "pants_bottom_fraction", "side_fraction", "behind_ratio", "front_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TemplateConfig.{name} must be in [0, 1], got {value}")
        for name in ("horizontal_px", "vertical_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"TemplateConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("top_n", "per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"TemplateConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.forms:
            raise ValueError("TemplateConfig.forms is empty")
        for form in self.forms:
            unknown = set(form_fields(form)) - _PLACEHOLDERS
            if unknown or "np" not in form_fields(form):
                raise ValueError(f"TemplateConfig.forms: {form!r} must use {{np}} and only {sorted(_PLACEHOLDERS)}")

    @property
    def clothing_classes(self) -> Tuple[str, ...]:
        return self.hat_classes + self.shirt_classes + self.pants_classes + self.shoes_classes


def form_fields(form: str) -> List[str]:
    """Placeholder names used by an expression form."""
    return [name for _, name, _, _ in string.Formatter().parse(form) if name is not None]


@dataclass(frozen=True)
class SceneObject:
    """A detected object as the rules see it."""
    cls: str
    box: Box
    score: float
    attribute: Optional[str] = None
    clothing: Tuple["SceneObject", ...] = ()
    spatial: Tuple[str, ...] = ()

    @property
    def noun_phrase(self) -> str:
        return f"{self.attribute} {self.cls}" if self.attribute else self.cls


def split_groups(objects: Sequence[SceneObject], config: TemplateConfig
                 ) -> Tuple[List[SceneObject], List[SceneObject], List[SceneObject]]:
    """``(people, clothing, things)``, each in input order."""
    people = [o for o in objects if o.cls in config.person_classes]
    clothing = [o for o in objects if o.cls in config.clothing_classes and o.cls not in config.person_classes]
    things = [o for o in objects if o.cls not in config.person_classes and o.cls not in config.clothing_classes]
    return people, clothing, things


def remove_tiny(objects: Sequence[SceneObject], width: float, height: float,
                min_area_fraction: float) -> List[SceneObject]:
    """Objects whose box covers at least ``min_area_fraction`` of the ``width`` x ``height`` image."""
    image_area = width * height
    return [o for o in objects if area(o.box) >= min_area_fraction * image_area]


def remove_duplicates(objects: Sequence[SceneObject], iou_threshold: float) -> List[SceneObject]:
    """Pseudo-Q's pairwise rule: drop every object that a more confident one (ties: an earlier one) overlaps with
    IoU > ``iou_threshold``, whether or not that one survives itself."""
    if len(objects) < 2:
        return list(objects)
    boxes = [o.box for o in objects]
    scores = torch.tensor([o.score for o in objects], dtype=torch.float64)
    order = torch.arange(len(objects))
    # stronger[i, j]: object j beats object i (higher score, or equal score and earlier)
    stronger = (scores[None, :] > scores[:, None]) | (
        (scores[None, :] == scores[:, None]) & (order[None, :] < order[:, None]))
    beaten = ((iou_matrix(boxes, boxes) > iou_threshold) & stronger).any(dim=1)
    return [o for o, b in zip(objects, beaten.tolist()) if not b]


def attach_attributes(objects: Sequence[SceneObject], attributed: Sequence[AttributeBox], iou_threshold: float,
                      min_score: float) -> List[SceneObject]:
    """Each object takes the attribute of the same-class attributed box with the highest IoU (> ``iou_threshold``;
    ties: the higher attribute score, then the earlier box) among those scoring > ``min_score``. An attribute
    that is already a word of the class name ("white" for "white shirt") is not added."""
    if not objects or not attributed:
        return list(objects)
    overlaps = iou_matrix([o.box for o in objects], [a.box for a in attributed]).tolist()
    out = []
    for o, row in zip(objects, overlaps):
        candidates = [k for k, a in enumerate(attributed) if a.cls == o.cls and a.score > min_score
                      and a.attribute not in o.cls.split()]
        best = max((k for k in candidates if row[k] > iou_threshold),
                   key=lambda k: (row[k], attributed[k].score, -k), default=None)
        out.append(o if best is None else dataclasses.replace(o, attribute=attributed[best].attribute))
    return out


def _clothing_kind(cls: str, config: TemplateConfig) -> str:
    for kind in ("hat", "shirt", "pants", "shoes"):
        if cls in getattr(config, f"{kind}_classes"):
            return kind
    raise ValueError(f"{cls!r} is not a clothing class")


def clothing_fits(cloth: SceneObject, person: SceneObject, config: TemplateConfig) -> bool:
    """Pseudo-Q's placement checks: a hat's centre in the top part of the person, pants' in the bottom half."""
    height = person.box[3] - person.box[1]
    if height <= 0:
        return False
    from_bottom = (person.box[3] - center(cloth.box)[1]) / height
    kind = _clothing_kind(cloth.cls, config)
    if kind == "hat":
        return from_bottom > config.hat_top_fraction
    if kind == "pants":
        return from_bottom < config.pants_bottom_fraction
    return True


def attach_clothing(people: Sequence[SceneObject], clothing: Sequence[SceneObject],
                    config: TemplateConfig) -> List[SceneObject]:
    """Each clothing box is attached to the person holding the largest share of it (> ``clothing_inside``; ties:
    the more confident, then the earlier person) where it fits; clothing without such a person is dropped."""
    worn: Dict[int, List[SceneObject]] = {}
    for cloth in clothing:
        shares = [inside_fraction(cloth.box, person.box) for person in people]
        best = max((k for k, person in enumerate(people)
                    if shares[k] > config.clothing_inside and clothing_fits(cloth, person, config)),
                   key=lambda k: (shares[k], people[k].score, -k), default=None)
        if best is not None:
            worn.setdefault(best, []).append(cloth)
    return [dataclasses.replace(p, clothing=p.clothing + tuple(worn[k])) if k in worn else p
            for k, p in enumerate(people)]


def _argmin(values: Sequence[float]) -> int:
    return values.index(min(values))


def _argmax(values: Sequence[float]) -> int:
    return values.index(max(values))


def spatial_words_for_group(boxes: Sequence[Box], width: float, height: float,
                            config: TemplateConfig) -> List[List[str]]:
    """Spatial words of each box of one class (see the module docstring); ties go to the earlier box."""
    n = len(boxes)
    words: List[List[str]] = [[] for _ in range(n)]
    if n < 2:
        return words
    cx = [center(b)[0] for b in boxes]
    cy = [center(b)[1] for b in boxes]
    side = config.side_fraction
    left, right = _argmin(cx), _argmax(cx)
    if cx[right] - cx[left] > config.horizontal_px:
        words[left].append("left")
        words[right].append("right")
        for i in range(n):
            if i in (left, right):
                continue
            if n == 3 or width * side <= cx[i] <= width * (1 - side):
                words[i].append("middle")
            else:
                words[i].append("left" if cx[i] < width * side else "right")
    top, bottom = _argmin(cy), _argmax(cy)
    if cy[bottom] - cy[top] > config.vertical_px:
        words[top].append("top")
        words[bottom].append("bottom")
        for i in range(n):
            if i in (top, bottom):
                continue
            if cy[i] < height * side:
                words[i].append("top")
            elif cy[i] > height * (1 - side):
                words[i].append("bottom")
    areas = [area(b) for b in boxes]
    largest = _argmax(areas)
    if areas[largest] > 0 and min(areas) / areas[largest] < config.behind_ratio:
        words[largest].append("front")
        for i in range(n):
            if i == largest:
                continue
            ratio = areas[i] / areas[largest]
            if ratio < config.behind_ratio:
                words[i].append("behind")
            elif ratio > config.front_ratio:
                words[i].append("front")
    return words


def assign_spatial_words(objects: Sequence[SceneObject], width: float, height: float,
                         config: TemplateConfig) -> List[SceneObject]:
    """Objects with their spatial words, computed among the objects of the same class."""
    by_class: Dict[str, List[int]] = {}
    for i, o in enumerate(objects):
        by_class.setdefault(o.cls, []).append(i)
    out = list(objects)
    for indices in by_class.values():
        group_words = spatial_words_for_group([objects[i].box for i in indices], width, height, config)
        for i, ws in zip(indices, group_words):
            out[i] = dataclasses.replace(objects[i], spatial=objects[i].spatial + tuple(ws))
    return out


def select_top(objects: Sequence[SceneObject], config: TemplateConfig) -> List[SceneObject]:
    """The ``top_n`` most confident people; if there are fewer, all people then the most confident things
    (stable for equal scores)."""
    people = sorted((o for o in objects if o.cls in config.person_classes), key=lambda o: -o.score)
    things = sorted((o for o in objects if o.cls not in config.person_classes), key=lambda o: -o.score)
    return (people + things)[:config.top_n]


def object_expressions(obj: SceneObject, config: TemplateConfig) -> List[str]:
    """Every form filled in for ``obj`` (each spatial word x each clothing item), duplicates removed."""
    clothes = [c.noun_phrase for c in obj.clothing]
    out: List[str] = []
    for form in config.forms:
        names = set(form_fields(form))
        spatial: Iterable[Optional[str]] = obj.spatial if names & {"s", "sp"} else [None]
        wear: Iterable[Optional[str]] = clothes if "c" in names else [None]
        for s, c in itertools.product(list(spatial), list(wear)):
            values = {"np": obj.noun_phrase, "s": s, "sp": SPATIAL_PHRASES.get(s or "", s), "c": c}
            out.append(" ".join(form.format(**values).split()))
    return list(dict.fromkeys(out))


def sample_expressions(candidates: Sequence[Tuple[Box, str]], k: int,
                       rng: random.Random) -> List[Tuple[Box, str]]:
    """All candidates when there are at most ``k``, else ``k`` drawn without replacement (kept in order)."""
    if len(candidates) <= k:
        return list(candidates)
    return [candidates[i] for i in sorted(rng.sample(range(len(candidates)), k))]


def image_rng(seed: int, image: str) -> random.Random:
    """The random generator of one image: a function of (seed, image name) only."""
    return random.Random(f"{seed}:{image}")


def prepare_objects(record: ImageDetections, attributes: Sequence[AttributeBox], config: TemplateConfig,
                    counts: Optional[Counter] = None
                    ) -> Tuple[List[SceneObject], List[SceneObject], List[SceneObject]]:
    """Rules 1-4 for one image (boxes clipped to the image first): ``(people, clothing, things)``."""
    counts = Counter() if counts is None else counts
    objects = [SceneObject(d.cls, clip(d.box, record.width, record.height), d.score) for d in record.objects]
    people, clothing, things = split_groups(objects, config)
    kept = [remove_tiny(g, record.width, record.height, config.min_area_fraction) for g in (people, things)]
    counts["tiny_removed"] += len(people) + len(things) - sum(len(g) for g in kept)
    groups = [remove_duplicates(g, config.dedup_iou) for g in (kept[0], clothing, kept[1])]
    counts["duplicates_removed"] += sum(len(g) for g in kept) + len(clothing) - sum(len(g) for g in groups)
    people, clothing, things = (attach_attributes(g, attributes, config.attr_iou, config.attr_score)
                                for g in groups)
    counts["attributes_attached"] += sum(o.attribute is not None for o in people + clothing + things)
    return people, clothing, things


def describe_image(record: ImageDetections, attributes: Sequence[AttributeBox], config: TemplateConfig,
                   counts: Optional[Counter] = None) -> List[SceneObject]:
    """Rules 1-7 for one image: the selected objects with attributes, clothing and spatial words."""
    counts = Counter() if counts is None else counts
    people, clothing, things = prepare_objects(record, attributes, config, counts)
    people = attach_clothing(people, clothing, config)
    counts["clothing_attached"] += sum(len(p.clothing) for p in people)
    scene = assign_spatial_words(people + things, record.width, record.height, config)
    selected = select_top(scene, config)
    counts["selected_objects"] += len(selected)
    return selected


def generate(detections: Sequence[ImageDetections], attributes: Mapping[str, Sequence[AttributeBox]], dataset: str,
             config: TemplateConfig = TemplateConfig(), seed: int = 0,
             progress: bool = False) -> Tuple[List[tuple], Dict[str, int]]:
    """Template pseudo samples of ``dataset`` (official layout) for every image of ``detections``, and counts of
    what each rule did. Deterministic for a seed."""
    counts: Counter = Counter()
    samples: List[tuple] = []
    for record in tqdm(detections, desc="template", unit="img", disable=not progress):
        counts["images"] += 1
        counts["detected_objects"] += len(record.objects)
        selected = describe_image(record, attributes.get(record.image, ()), config, counts)
        candidates = [(o.box, phrase) for o in selected for phrase in object_expressions(o, config)]
        counts["candidates"] += len(candidates)
        for box, phrase in sample_expressions(candidates, config.per_image, image_rng(seed, record.image)):
            if is_trainable_box(dataset, box):
                samples.append(make_sample(dataset, record.image, box, phrase))
            else:
                counts["untrainable_boxes"] += 1
    counts["samples"] = len(samples)
    return samples, dict(counts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m pseudo_label_generation_module.template",
                                description="Template pseudo-language labels from detections and attributes.")
    p.add_argument("--detections", required=True, help="detections.json (docs/upstream_formats.md)")
    p.add_argument("--attributes", help="attributes.json (optional: without it no attributes are attached)")
    _cli.add_common_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the per-image expression sampling")
    _cli.add_config_arguments(p, TemplateConfig)
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    args = build_parser().parse_args(argv)
    config = _cli.config_from_args(args, TemplateConfig)
    _cli.check_outputs(args)
    detections = load_detections(args.detections)
    attributes = load_attributes(args.attributes) if args.attributes else {}
    samples, counts = generate(detections, attributes, args.dataset, config, args.seed, progress=True)
    _cli.write_outputs(args, "template", samples, counts, class_names(detections))
    return counts


if __name__ == "__main__":
    run_cli(main)
