"""The simulated upstream models of the synthetic world: what a noisy detector, attribute predictor, scene-graph
model and captioner would say about each training image (the pseudo-label sources' inputs), with controllable
noise, and their JSON payloads."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

from demo.synthetic.config import (CLASSES, COLOURS, FAMILIES, FAMILY_OF, MAX_SPURIOUS, PREDICATES, SIZE_EXTENT,
                                   SIZES, SyntheticConfig, rng_for)
from demo.synthetic.language import SYNONYMS, article, noun_phrase, render_phrase
from demo.synthetic.scenes import (ExpressionSpec, Pose, Scene, SceneObject, extent_scale, grid_location,
                                   relation_holds)
from utils.box_ops import elementwise_iou

_MISS_SIZE_FACTOR = {"small": 1.6, "medium": 1.0, "large": 0.4}
_SCORE_BASE = {"small": 0.6, "medium": 0.7, "large": 0.8}
_SIZE_ATTRIBUTE_RATE = 0.35


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
    scale = extent_scale(config)
    lo, hi = SIZE_EXTENT["small"][0] * scale, SIZE_EXTENT["large"][1] * scale
    for _ in range(MAX_SPURIOUS):
        u = rng.random(7)
        if u[0] >= config.spurious_rate / MAX_SPURIOUS:
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
            caption = render_phrase(dataclasses.replace(spec, location=grid_location(subject, side)), "caption",
                                    rng)
        else:
            others = [o for o in scene.objects if o.id != subject.id]
            second = others[int(rng.integers(len(others)))]
            first = noun_phrase(spec, rng)
            second_phrase = noun_phrase(ExpressionSpec(category=second.category, colour=second.colour), rng)
            caption = f"{article(first)} {first} and {article(second_phrase)} {second_phrase}"
        captions.append(caption)
    return captions, errors


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
    dets = simulate_detections(scene, config, rng_for(config, "detections", "train", index))
    attributes, wrong_attr = simulate_attributes(scene, dets, config, rng_for(config, "attributes", "train", index))
    triplets, wrong_trip = simulate_scene_graph(scene, dets, config, rng_for(config, "scene_graphs", "train", index))
    captions, wrong_cap = simulate_captions(scene, config, rng_for(config, "captions", "train", index))
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

