"""Readers for the normalised upstream files of ``docs/upstream_formats.md``.

Every file is a JSON object with an ``"images"`` list, one record per image; boxes are ``[x1, y1, x2, y2]`` in
original-image pixels. A malformed record raises ``InputFormatError`` naming the file and the record
(``images[3].objects[1]: ...``). Image records keep their file order; an image listed twice is an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from pseudo_label_generation_module._io import read_json
from pseudo_label_generation_module.geometry import Box
from utils.errors import InputError


class InputFormatError(InputError):
    """A malformed upstream file; the message names the file and the record."""

    def __init__(self, path: str, where: str, reason: str):
        self.path, self.where, self.reason = path, where, reason
        super().__init__(f"{path}: {where}: {reason}")


@dataclass(frozen=True)
class Detection:
    """One detected object: pixel box, class name (lower-cased) and confidence."""
    box: Box
    cls: str
    score: float


@dataclass(frozen=True)
class AttributeBox:
    """One box of the attribute detector with its (single) attribute and the attribute's confidence."""
    box: Box
    cls: str
    attribute: str
    score: float


@dataclass(frozen=True)
class ImageDetections:
    """The detector's output for one image."""
    image: str
    width: float
    height: float
    objects: List[Detection] = field(default_factory=list)


@dataclass(frozen=True)
class Triplet:
    """One scene-graph triplet; ``subject_id``/``object_id`` are optional instance ids."""
    subject_cls: str
    subject_box: Box
    predicate: str
    object_cls: str
    object_box: Box
    score: float
    subject_id: Optional[Any] = None
    object_id: Optional[Any] = None


class _Reader:
    """Field checks that raise ``InputFormatError`` with the file and record path."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, where: str, reason: str) -> InputFormatError:
        return InputFormatError(self.path, where, reason)

    def images(self, data: Any) -> List[Mapping[str, Any]]:
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise self.fail("top level", 'expected a JSON object with an "images" list')
        seen = set()
        for i, rec in enumerate(data["images"]):
            if not isinstance(rec, dict):
                raise self.fail(f"images[{i}]", f"expected an object, got {type(rec).__name__}")
            name = self.string(rec, "image", f"images[{i}]")
            if name in seen:
                raise self.fail(f"images[{i}]", f"image {name!r} is listed twice")
            seen.add(name)
        return data["images"]

    def get(self, rec: Mapping[str, Any], key: str, where: str) -> Any:
        if not isinstance(rec, dict):
            raise self.fail(where, f"expected an object, got {type(rec).__name__}")
        if key not in rec:
            raise self.fail(where, f"missing key {key!r}")
        return rec[key]

    def string(self, rec: Mapping[str, Any], key: str, where: str) -> str:
        value = self.get(rec, key, where)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"{key!r} must be a non-empty string, got {value!r}")
        return value.strip()

    def number(self, rec: Mapping[str, Any], key: str, where: str, positive: bool = False) -> float:
        value = self.get(rec, key, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, f"{key!r} must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(where, f"{key!r} must be positive, got {value!r}")
        return float(value)

    def box(self, rec: Mapping[str, Any], key: str, where: str) -> Box:
        value = self.get(rec, key, where)
        if (not isinstance(value, (list, tuple)) or len(value) != 4
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                       for v in value)):
            raise self.fail(where, f"{key!r} must be 4 finite numbers [x1, y1, x2, y2], got {value!r}")
        x1, y1, x2, y2 = (float(v) for v in value)
        if x2 < x1 or y2 < y1:
            raise self.fail(where, f"{key!r} {list(value)} is inverted (need x1 <= x2 and y1 <= y2)")
        return (x1, y1, x2, y2)

    def items(self, rec: Mapping[str, Any], key: str, where: str) -> List[Any]:
        value = self.get(rec, key, where)
        if not isinstance(value, list):
            raise self.fail(where, f"{key!r} must be a list, got {type(value).__name__}")
        return value


def load_detections(path: str) -> List[ImageDetections]:
    """detections.json: per image its size and ``objects`` (box, class, score)."""
    r = _Reader(path)
    out = []
    for i, rec in enumerate(r.images(read_json(path))):
        where = f"images[{i}]"
        objects = []
        for j, obj in enumerate(r.items(rec, "objects", where)):
            w = f"{where}.objects[{j}]"
            objects.append(Detection(r.box(obj, "box", w), r.string(obj, "class", w).lower(),
                                     r.number(obj, "score", w)))
        out.append(ImageDetections(r.string(rec, "image", where), r.number(rec, "width", where, positive=True),
                                   r.number(rec, "height", where, positive=True), objects))
    return out


def load_attributes(path: str) -> Dict[str, List[AttributeBox]]:
    """attributes.json: image -> its attributed boxes."""
    r = _Reader(path)
    out: Dict[str, List[AttributeBox]] = {}
    for i, rec in enumerate(r.images(read_json(path))):
        where = f"images[{i}]"
        boxes = []
        for j, obj in enumerate(r.items(rec, "objects", where)):
            w = f"{where}.objects[{j}]"
            boxes.append(AttributeBox(r.box(obj, "box", w), r.string(obj, "class", w).lower(),
                                      r.string(obj, "attribute", w).lower(), r.number(obj, "score", w)))
        out[r.string(rec, "image", where)] = boxes
    return out


def load_scene_graphs(path: str) -> Dict[str, List[Triplet]]:
    """scene_graphs.json: image -> its triplets (subject/object: class, box and an optional ``id``)."""
    r = _Reader(path)
    out: Dict[str, List[Triplet]] = {}
    for i, rec in enumerate(r.images(read_json(path))):
        where = f"images[{i}]"
        triplets = []
        for j, t in enumerate(r.items(rec, "triplets", where)):
            w = f"{where}.triplets[{j}]"
            sub, obj = r.get(t, "subject", w), r.get(t, "object", w)
            triplets.append(Triplet(
                r.string(sub, "class", f"{w}.subject").lower(), r.box(sub, "box", f"{w}.subject"),
                r.string(t, "predicate", w).lower(),
                r.string(obj, "class", f"{w}.object").lower(), r.box(obj, "box", f"{w}.object"),
                r.number(t, "score", w), sub.get("id"), obj.get("id")))
        out[r.string(rec, "image", where)] = triplets
    return out


def load_captions(path: str) -> Dict[str, List[str]]:
    """captions.json: image -> its captions (in file order)."""
    r = _Reader(path)
    out: Dict[str, List[str]] = {}
    for i, rec in enumerate(r.images(read_json(path))):
        where = f"images[{i}]"
        captions = r.items(rec, "captions", where)
        for j, c in enumerate(captions):
            if not isinstance(c, str):
                raise r.fail(f"{where}.captions[{j}]", f"expected a string, got {type(c).__name__}")
        out[r.string(rec, "image", where)] = list(captions)
    return out


def load_synonyms(path: str) -> Dict[str, List[str]]:
    """synonyms.json: ``{class: [words naming it]}``."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputFormatError(path, "top level", "expected a JSON object {class: [words]}")
    for cls, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputFormatError(path, f"class {cls!r}", f"expected a list of words, got {names!r}")
    return {str(k): list(v) for k, v in data.items()}


def class_names(detections: Sequence[ImageDetections]) -> List[str]:
    """Every class name that occurs in ``detections``, sorted."""
    return sorted({o.cls for d in detections for o in d.objects})
