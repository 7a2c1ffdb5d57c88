"""Language of the synthetic world: the words (synonyms, size, location and predicate words), the phrases that
say an ``ExpressionSpec`` in a human or a captioner's style, the ground-truth expressions of a scene (unique and
clearly true of their target) and the captions of the pretraining corpus."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from demo.synthetic.config import KINDS, LOCATIONS, PREDICATES, TEST_FAMILY, SyntheticConfig, rng_for
from demo.synthetic.scenes import (Expression, ExpressionSpec, Scene, SceneObject, clearly_true, grid_location,
                                   matches, relation_holds)

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
_SYNONYM_RATE = 0.25


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def article(phrase: str) -> str:
    """The indefinite article of ``phrase``."""
    return "an" if phrase[:1] in "aeiou" else "a"


def _noun(category: Optional[str], rng: np.random.Generator, synonym_rate: float = _SYNONYM_RATE) -> str:
    if category is None:
        return _pick(rng, GENERIC_NOUNS)
    return _pick(rng, SYNONYMS[category]) if rng.random() < synonym_rate else category


def noun_phrase(spec: ExpressionSpec, rng: np.random.Generator, synonym_rate: float = _SYNONYM_RATE) -> str:
    """Size word, colour and noun of ``spec`` (a synonym of the class with probability ``synonym_rate``)."""
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
    words = noun_phrase(base, rng)
    if style == "human":
        det = "the " if rng.random() < 0.65 else ""
        if spec.relation is not None:
            predicate, ref = spec.relation
            that = _pick(rng, (" that is", " which is")) if rng.random() < 0.2 else ""
            return (f"{det}{words}{that} {_pick(rng, PRED_WORDS[predicate])} "
                    f"{det}{noun_phrase(ref, rng)}")
        if spec.location:
            prefix, suffix = _location_words(spec.location, rng, style)
            return f"{det}{prefix} {words}" if rng.random() < 0.45 else f"{det}{words} {suffix}"
        return f"{det}{words}"
    if style != "caption":
        raise ValueError(f"unknown phrase style {style!r}; valid: human, caption")
    subject = f"{article(words)} {words}"
    if spec.relation is not None:
        predicate, ref = spec.relation
        ref_phrase = noun_phrase(ref, rng)
        obj = f"{article(ref_phrase)} {ref_phrase}"
        if rng.random() < 0.3:
            return f"there is {subject} {_pick(rng, PRED_WORDS[predicate])} {obj}"
        return f"{subject} {_pick(rng, CAPTION_VERBS)}{_pick(rng, PRED_WORDS[predicate])} {obj}"
    if spec.location:
        _, tail = _location_words(spec.location, rng, style)
        return f"there is {subject} {tail}" if rng.random() < 0.3 else f"{subject} {tail}"
    return _pick(rng, (f"there is {subject} in the picture", f"a picture of {subject}",
                       f"{subject} on a textured background", f"{subject} in the image"))


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
    return matches(scene, spec, cache) == [target.id] and clearly_true(scene, target, spec, cache)


def _reference_spec(scene: Scene, ref: SceneObject, cache: _Cache) -> Optional[ExpressionSpec]:
    """The shortest unique plain description of a reference object (category first, then with colour...)."""
    for spec in (ExpressionSpec(category=ref.category), ExpressionSpec(category=ref.category, colour=ref.colour),
                 ExpressionSpec(category=ref.category, size=ref.size),
                 ExpressionSpec(category=ref.category, colour=ref.colour, size=ref.size)):
        if matches(scene, spec, cache) == [ref.id]:
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
            needed = 3.0 if len(matches(scene, base, cache)) > 1 else 1.0
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
    rng = rng_for(config, "expressions", split, index)
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


def pretrain_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming every object of the scene with its size, colour, shape and place in the image."""
    side = float(scene.width)
    parts = []
    for i in rng.permutation(len(scene.objects)):
        obj = scene.objects[int(i)]
        words = noun_phrase(ExpressionSpec(obj.category, obj.colour, obj.size), rng, synonym_rate=0.2)
        location = grid_location(obj, side)
        place = (f"at the {location[0]} {location[1]}" if len(location) == 2 else
                 "in the center" if location == ("middle",) else
                 f"on the {location[0]}" if location[0] in ("left", "right") else f"at the {location[0]}")
        parts.append(f"{article(words)} {words} {place}")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]

