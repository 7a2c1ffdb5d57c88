"""Converters from common upstream formats to the normalised files of ``docs/upstream_formats.md``.

``python -m pseudo_label_generation_module.convert <format> ...``:

* ``coco-detections``: COCO detection results ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``
  plus a COCO annotation file (``images``: id, file_name, width, height; ``categories``: id, name)
  -> detections.json (every image of the annotation file, in its order; boxes to xyxy).
* ``vg-attributes``: a Visual-Genome-style attribute list
  ``[{"image": name | "image_id": id, "attributes": [{"x", "y", "w", "h", "names": [class, ...],
  "attributes": [word, ...], "attribute_scores": [score, ...]}]}]`` (``attribute_scores`` optional, 1.0 each when
  absent, as for ground-truth annotations) -> attributes.json: one attributed box per object, its highest-scoring
  attribute (the first on ties) and its first name as class; objects without attributes are skipped.
* ``scene-graphs``: either scene-graph-benchmark style, per image ``{"image" | "image_id", "boxes": [[x1, y1, x2,
  y2], ...], "labels": [...], "rel_pairs": [[subject_index, object_index], ...], "rel_labels": [...],
  "rel_scores": [...]}`` (labels and predicates as names, or as indices with ``--dicts`` VG-SGG-dicts.json holding
  ``idx_to_label`` / ``idx_to_predicate``; box indices become instance ids, so a pair (i, i) is self-referential),
  or RelTR style, per image ``{"image" | "image_id", "triplets": [{"subject", "subject_box", "predicate",
  "object", "object_box", "score"}]}`` -> scene_graphs.json.
* ``coco-captions``: COCO caption results ``[{"image_id", "caption"}]`` plus a COCO annotation file
  -> captions.json (every image with a caption, in the annotation file's order; captions in result order).

``image_id`` values map to file names through ``--images``: a COCO annotation file (``images``: id, file_name) or
a Visual Genome ``image_data.json`` (``[{"image_id", "url"}]``: the URL's last part).
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from pseudo_label_generation_module._io import read_json
from pseudo_label_generation_module.inputs import InputFormatError
from utils.cli import run_cli
from utils.io import check_writable_file, write_json


def _fail(path: str, where: str, reason: str) -> InputFormatError:
    return InputFormatError(path, where, reason)


def _list(data: Any, path: str, what: str) -> List[Any]:
    if not isinstance(data, list):
        raise _fail(path, "top level", f"expected a JSON list of {what}, got {type(data).__name__}")
    return data


def _key(rec: Any, key: str, path: str, where: str) -> Any:
    if not isinstance(rec, dict):
        raise _fail(path, where, f"expected an object, got {type(rec).__name__}")
    if key not in rec:
        raise _fail(path, where, f"missing key {key!r}")
    return rec[key]


def _number(value: Any, path: str, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, where, f"{what} must be a finite number, got {value!r}")
    return float(value)


def _numbers(value: Any, n: int, path: str, where: str, what: str) -> List[float]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise _fail(path, where, f"{what} must be {n} numbers, got {value!r}")
    return [_number(v, path, where, what) for v in value]


def coco_images(path: str) -> List[Dict[str, Any]]:
    """The ``images`` list of a COCO annotation file (each needs ``id`` and ``file_name``)."""
    data = read_json(path)
    images = _key(data, "images", path, "top level")
    for i, rec in enumerate(_list(images, path, "images")):
        _key(rec, "id", path, f"images[{i}]")
        _key(rec, "file_name", path, f"images[{i}]")
    return images


def image_names(path: str) -> Dict[Any, str]:
    """image id -> file name, from a COCO annotation file or a Visual Genome ``image_data.json``."""
    data = read_json(path)
    if isinstance(data, dict):
        return {rec["id"]: rec["file_name"] for rec in coco_images(path)}
    out = {}
    for i, rec in enumerate(_list(data, path, "images")):
        out[_key(rec, "image_id", path, f"[{i}]")] = os.path.basename(str(_key(rec, "url", path, f"[{i}]")))
    return out


def _image_of(rec: Mapping[str, Any], names: Optional[Mapping[Any, str]], path: str, where: str) -> str:
    if isinstance(rec, dict) and isinstance(rec.get("image"), str):
        return rec["image"]
    image_id = _key(rec, "image_id", path, where)
    if names is None:
        raise _fail(path, where, "has an image_id but no --images file maps ids to file names")
    if image_id not in names:
        raise _fail(path, where, f"image_id {image_id!r} is not in the --images file")
    return names[image_id]


def coco_detections(results_path: str, annotations_path: str, min_score: float = 0.0) -> Dict[str, Any]:
    """detections.json content from COCO detection results and their annotation file."""
    data = read_json(annotations_path)
    categories = {}
    for i, c in enumerate(_list(_key(data, "categories", annotations_path, "top level"), annotations_path,
                                "categories")):
        categories[_key(c, "id", annotations_path, f"categories[{i}]")] = str(
            _key(c, "name", annotations_path, f"categories[{i}]"))
    out, by_id = [], {}
    for i, rec in enumerate(coco_images(annotations_path)):
        where = f"images[{i}]"
        width = _number(_key(rec, "width", annotations_path, where), annotations_path, where, "width")
        height = _number(_key(rec, "height", annotations_path, where), annotations_path, where, "height")
        entry = {"image": rec["file_name"], "width": width, "height": height, "objects": []}
        by_id[rec["id"]] = entry
        out.append(entry)
    for i, det in enumerate(_list(read_json(results_path), results_path, "detections")):
        where = f"[{i}]"
        image_id, cat = _key(det, "image_id", results_path, where), _key(det, "category_id", results_path, where)
        if image_id not in by_id:
            raise _fail(results_path, where, f"image_id {image_id!r} is not in {annotations_path}")
        if cat not in categories:
            raise _fail(results_path, where, f"category_id {cat!r} is not in {annotations_path}")
        x, y, w, h = _numbers(_key(det, "bbox", results_path, where), 4, results_path, where, "bbox")
        score = _number(_key(det, "score", results_path, where), results_path, where, "score")
        if w < 0 or h < 0:
            raise _fail(results_path, where, f"bbox {[x, y, w, h]} has a negative size")
        if score >= min_score:
            by_id[image_id]["objects"].append({"box": [x, y, x + w, y + h], "class": categories[cat], "score": score})
    return {"images": out}


def vg_attributes(input_path: str, images_path: Optional[str] = None) -> Dict[str, Any]:
    """attributes.json content from a Visual-Genome-style attribute list (module docstring)."""
    names = image_names(images_path) if images_path else None
    out = []
    for i, rec in enumerate(_list(read_json(input_path), input_path, "images")):
        where = f"[{i}]"
        objects = []
        for j, obj in enumerate(_list(_key(rec, "attributes", input_path, where), input_path, "objects")):
            w = f"{where}.attributes[{j}]"
            if not isinstance(obj, dict):
                raise _fail(input_path, w, f"expected an object, got {type(obj).__name__}")
            attrs = obj.get("attributes") or []
            if not isinstance(attrs, list):
                raise _fail(input_path, w, f"'attributes' must be a list, got {attrs!r}")
            if not attrs:
                continue
            scores = obj.get("attribute_scores", [1.0] * len(attrs))
            scores = _numbers(scores, len(attrs), input_path, w, "attribute_scores")
            cls = _key(obj, "names", input_path, w)
            if not isinstance(cls, list) or not cls or not all(isinstance(c, str) for c in cls):
                raise _fail(input_path, w, f"'names' must be a non-empty list of strings, got {cls!r}")
            best = max(range(len(attrs)), key=lambda k: (scores[k], -k))
            x, y, bw, bh = (_number(_key(obj, k, input_path, w), input_path, w, k) for k in ("x", "y", "w", "h"))
            objects.append({"box": [x, y, x + bw, y + bh], "class": cls[0], "attribute": str(attrs[best]).strip(),
                            "score": scores[best]})
        out.append({"image": _image_of(rec, names, input_path, where), "objects": objects})
    return {"images": out}


def _name(value: Any, table: Optional[Mapping[str, str]], path: str, where: str, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if table is None:
            raise _fail(path, where, f"{what} {value} is an index but no --dicts file names the indices")
        if str(value) not in table:
            raise _fail(path, where, f"{what} index {value} is not in the --dicts file")
        return table[str(value)]
    raise _fail(path, where, f"{what} must be a name or an index, got {value!r}")


def scene_graphs(input_path: str, images_path: Optional[str] = None,
                 dicts_path: Optional[str] = None) -> Dict[str, Any]:
    """scene_graphs.json content from scene-graph-benchmark-style or RelTR-style records (module docstring)."""
    names = image_names(images_path) if images_path else None
    dicts = read_json(dicts_path) if dicts_path else {}
    labels_of, predicates_of = dicts.get("idx_to_label"), dicts.get("idx_to_predicate")
    out = []
    for i, rec in enumerate(_list(read_json(input_path), input_path, "images")):
        where = f"[{i}]"
        triplets = []
        if isinstance(rec, dict) and "rel_pairs" in rec:
            boxes = [_numbers(b, 4, input_path, f"{where}.boxes[{k}]", "box")
                     for k, b in enumerate(_key(rec, "boxes", input_path, where))]
            labels = [_name(v, labels_of, input_path, f"{where}.labels[{k}]", "label")
                      for k, v in enumerate(_key(rec, "labels", input_path, where))]
            if len(labels) != len(boxes):
                raise _fail(input_path, where, f"{len(boxes)} boxes but {len(labels)} labels")
            pairs, preds = _key(rec, "rel_pairs", input_path, where), _key(rec, "rel_labels", input_path, where)
            scores = _key(rec, "rel_scores", input_path, where)
            if not (len(pairs) == len(preds) == len(scores)):
                raise _fail(input_path, where, "rel_pairs, rel_labels and rel_scores differ in length")
            for k, pair in enumerate(pairs):
                w = f"{where}.rel_pairs[{k}]"
                if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                        or not all(isinstance(v, int) and 0 <= v < len(boxes) for v in pair)):
                    raise _fail(input_path, w, f"expected two box indices below {len(boxes)}, got {pair!r}")
                s, o = pair
                triplets.append({
                    "subject": {"class": labels[s], "box": boxes[s], "id": s},
                    "predicate": _name(preds[k], predicates_of, input_path, f"{where}.rel_labels[{k}]", "predicate"),
                    "object": {"class": labels[o], "box": boxes[o], "id": o},
                    "score": _number(scores[k], input_path, f"{where}.rel_scores[{k}]", "score")})
        else:
            for k, t in enumerate(_key(rec, "triplets", input_path, where)):
                w = f"{where}.triplets[{k}]"
                triplets.append({
                    "subject": {"class": str(_key(t, "subject", input_path, w)),
                                "box": _numbers(_key(t, "subject_box", input_path, w), 4, input_path, w, "box")},
                    "predicate": str(_key(t, "predicate", input_path, w)),
                    "object": {"class": str(_key(t, "object", input_path, w)),
                               "box": _numbers(_key(t, "object_box", input_path, w), 4, input_path, w, "box")},
                    "score": _number(_key(t, "score", input_path, w), input_path, w, "score")})
        out.append({"image": _image_of(rec, names, input_path, where), "triplets": triplets})
    return {"images": out}


def coco_captions(results_path: str, annotations_path: str) -> Dict[str, Any]:
    """captions.json content from COCO caption results and their annotation file."""
    order = {rec["id"]: rec["file_name"] for rec in coco_images(annotations_path)}
    captions: Dict[Any, List[str]] = {}
    for i, rec in enumerate(_list(read_json(results_path), results_path, "captions")):
        image_id, text = _key(rec, "image_id", results_path, f"[{i}]"), _key(rec, "caption", results_path, f"[{i}]")
        if image_id not in order:
            raise _fail(results_path, f"[{i}]", f"image_id {image_id!r} is not in {annotations_path}")
        if not isinstance(text, str):
            raise _fail(results_path, f"[{i}]", f"caption must be a string, got {text!r}")
        captions.setdefault(image_id, []).append(text)
    return {"images": [{"image": name, "captions": captions[i]} for i, name in order.items() if i in captions]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m pseudo_label_generation_module.convert",
                                description="Convert upstream model outputs to the normalised JSON files.")
    sub = p.add_subparsers(dest="format", required=True)
    d = sub.add_parser("coco-detections", help="COCO detection results -> detections.json")
    d.add_argument("--results", required=True, help="[{image_id, category_id, bbox: [x, y, w, h], score}]")
    d.add_argument("--annotations", required=True, help="COCO annotation file: images and categories")
    d.add_argument("--min_score", type=float, default=0.0, help="drop detections scoring below this")
    a = sub.add_parser("vg-attributes", help="Visual-Genome-style attribute list -> attributes.json")
    a.add_argument("--input", required=True,
                   help="[{image | image_id, attributes: [{x, y, w, h, names, attributes, attribute_scores}]}]")
    a.add_argument("--images", help="COCO annotation file or VG image_data.json (for image_id records)")
    s = sub.add_parser("scene-graphs", help="scene-graph-benchmark / RelTR triplets -> scene_graphs.json")
    s.add_argument("--input", required=True, help="scene-graph-benchmark records (boxes, labels, rel_pairs, "
                                                  "rel_labels, rel_scores) or RelTR records (triplets)")
    s.add_argument("--images", help="COCO annotation file or VG image_data.json (for image_id records)")
    s.add_argument("--dicts", help="VG-SGG-dicts.json: idx_to_label / idx_to_predicate for index labels")
    c = sub.add_parser("coco-captions", help="COCO caption results -> captions.json")
    c.add_argument("--results", required=True, help="[{image_id, caption}]")
    c.add_argument("--annotations", required=True, help="COCO annotation file: images")
    for sp in (d, a, s, c):
        sp.add_argument("--output", required=True, help="normalised JSON file to write")
    return p


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = build_parser().parse_args(argv)
    check_writable_file(args.output, "--output")
    if args.format == "coco-detections":
        data = coco_detections(args.results, args.annotations, args.min_score)
    elif args.format == "vg-attributes":
        data = vg_attributes(args.input, args.images)
    elif args.format == "scene-graphs":
        data = scene_graphs(args.input, args.images, args.dicts)
    else:
        data = coco_captions(args.results, args.annotations)
    write_json(args.output, data)
    print(f"convert {args.format}: {len(data['images'])} images -> {args.output}")
    return args.output


if __name__ == "__main__":
    run_cli(main)
