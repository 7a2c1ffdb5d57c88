"""Relation pseudo-language labels from scene-graph triplets (docs/method.md#pseudo-language-label-sources).

Each (subject, predicate, object) triplet gives the expression "subject predicate object" grounded on the subject
box. Per image, in order:

1. ``min_score``: triplets with confidence below it are dropped (the official RelTR script keeps triplets whose
   subject, object and predicate probabilities all exceed 0.2, so 0.2 is the default).
2. Self-referential triplets are dropped: the same instance id on both sides, or subject and object boxes with
   IoU >= ``self_iou`` ("man wearing man" from one box).
3. The rest, most confident first, give expressions; an expression already produced for the image is dropped
   (the more confident grounding is kept).
4. At most ``per_image`` expressions per image (the official script keeps the top 10).

Boxes and the image (the template generator's rule): with the image sizes (``--detections``: the detector's file
of the same images, which records them) subject and object boxes are clipped to the image first, and a triplet whose
subject box has no area left inside it (wholly beyond the image) is dropped and counted as ``outside_image``. Without
sizes boxes can only be clamped at 0 (scene-graph models predict slightly negative coordinates), and a warning says
so.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tqdm import tqdm

from pseudo_label_generation_module import _cli
from pseudo_label_generation_module.geometry import Box, area, clip, paired_iou
from pseudo_label_generation_module.inputs import Triplet, load_detections, load_scene_graphs
from pseudo_label_generation_module.samples import is_trainable_box, make_sample
from utils.cli import run_cli


@dataclass(frozen=True)
class RelationConfig:
    """Filters of the relation source."""
    min_score: float = field(default=0.2, metadata={"help": "drop triplets with confidence below this"})
    self_iou: float = field(default=0.7, metadata={
        "help": "drop triplets whose subject and object boxes overlap with IoU at least this (self-referential)"})
    per_image: int = field(default=10, metadata={"help": "expressions kept per image (most confident first)"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.self_iou <= 1.0:
            raise ValueError(f"RelationConfig.self_iou must be in [0, 1], got {self.self_iou}")
        if self.per_image < 1:
            raise ValueError(f"RelationConfig.per_image must be >= 1, got {self.per_image}")


def expression(triplet: Triplet) -> str:
    """"subject predicate object", lower-cased, single spaces."""
    return " ".join(f"{triplet.subject_cls} {triplet.predicate} {triplet.object_cls}".lower().split())


def is_self_referential(triplet: Triplet, overlap: float, self_iou: float) -> bool:
    """Same instance id on both sides, or ``overlap`` (the IoU of its subject and object boxes) >= ``self_iou``."""
    if triplet.subject_id is not None and triplet.subject_id == triplet.object_id:
        return True
    return overlap >= self_iou


def image_relations(triplets: Sequence[Triplet], config: RelationConfig, counts: Optional[Counter] = None,
                    size: Optional[Tuple[float, float]] = None) -> List[Tuple[Box, str]]:
    """``(subject box, expression)`` of one image of ``size`` (width, height; None: unknown) after the filters of
    the module docstring."""
    counts = Counter() if counts is None else counts
    kept = []
    subjects = [t.subject_box if size is None else clip(t.subject_box, *size) for t in triplets]
    overlaps = paired_iou(subjects, [t.object_box if size is None else clip(t.object_box, *size) for t in triplets])
    for k, t in enumerate(triplets):
        if t.score < config.min_score:
            counts["low_confidence"] += 1
        elif size is not None and area(subjects[k]) <= 0:
            counts["outside_image"] += 1
        elif is_self_referential(t, overlaps[k], config.self_iou):
            counts["self_referential"] += 1
        else:
            kept.append((k, t))
    kept.sort(key=lambda kt: (-kt[1].score, kt[0]))
    out: Dict[str, Box] = {}
    for k, t in kept:
        text = expression(t)
        if text in out:
            counts["duplicate_expressions"] += 1
        elif len(out) >= config.per_image:
            counts["over_per_image"] += 1
        else:
            out[text] = tuple(max(float(v), 0.0) for v in subjects[k])
    return [(box, text) for text, box in out.items()]


def generate(scene_graphs: Mapping[str, Sequence[Triplet]], dataset: str, config: RelationConfig = RelationConfig(),
             progress: bool = False, image_sizes: Optional[Mapping[str, Tuple[float, float]]] = None
             ) -> Tuple[List[tuple], Dict[str, int]]:
    """Relation pseudo samples of ``dataset`` (official layout) for every image, and filter counts;
    ``image_sizes``: image -> (width, height), to clip boxes to their image (an image it lacks is counted as
    ``images_without_size`` and its boxes are only clamped at 0)."""
    counts: Counter = Counter()
    samples: List[tuple] = []
    for image, triplets in tqdm(scene_graphs.items(), desc="relation", unit="img", disable=not progress):
        counts["images"] += 1
        counts["triplets"] += len(triplets)
        size = None if image_sizes is None else image_sizes.get(image)
        if image_sizes is not None and size is None:
            counts["images_without_size"] += 1
        for box, text in image_relations(triplets, config, counts, size):
            if is_trainable_box(dataset, box):
                samples.append(make_sample(dataset, image, box, text))
            else:
                counts["untrainable_boxes"] += 1
    counts["samples"] = len(samples)
    return samples, dict(counts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m pseudo_label_generation_module.relation",
                                description="Relation pseudo-language labels from scene-graph triplets.")
    p.add_argument("--scene_graphs", required=True, help="scene_graphs.json (docs/upstream_formats.md)")
    p.add_argument("--detections", help="detections.json of the same images (docs/upstream_formats.md), for their "
                                         "sizes: boxes are clipped to the image and subjects wholly beyond it "
                                         "dropped (without it boxes are only clamped at 0)")
    _cli.add_common_arguments(p)
    _cli.add_config_arguments(p, RelationConfig)
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    args = build_parser().parse_args(argv)
    config = _cli.config_from_args(args, RelationConfig)
    _cli.check_outputs(args)
    graphs = load_scene_graphs(args.scene_graphs)
    sizes = None
    if args.detections:
        sizes = {d.image: (d.width, d.height) for d in load_detections(args.detections)}
    else:
        print("relation: warning: no --detections, so image sizes are unknown: boxes are only clamped at 0, not "
              "clipped to their image", file=sys.stderr)
    samples, counts = generate(graphs, args.dataset, config, progress=True, image_sizes=sizes)
    classes = sorted({c for ts in graphs.values() for t in ts for c in (t.subject_cls, t.object_cls)})
    _cli.write_outputs(args, "relation", samples, counts, classes)
    return counts


if __name__ == "__main__":
    run_cli(main)
