"""Statistics of pseudo-label sources, and the MSA order (easy to hard by mean entities per expression).

Per source: ``samples`` (count), ``images`` (distinct images covered), ``mean_entities`` (mean number of entities
per expression, see ``lexicon``; null for an empty source), ``vocabulary_size`` (distinct lower-cased words),
``mean_length`` and ``length_histogram`` (expression length in words -> count); with ``--reference`` (a
human-annotated split file), ``box_agreement``: how many pseudo boxes overlap an annotated box of their image.

    python -m pseudo_label_generation_module.stats --dataset unc template=t.pth relation=r.pth caption=c.pth \\
        --detections detections.json --output stats.json

A bare path names its source by the official pattern ``{order}_{dataset}_train_pseudo_{source}_{h}.pth`` or,
failing that, by the file name without extension.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from datasets.records import LAYOUTS, load_split_file
from pseudo_label_generation_module.geometry import Box, iou_matrix
from pseudo_label_generation_module.inputs import class_names, load_detections, load_synonyms
from pseudo_label_generation_module.lexicon import Lexicon, words
from pseudo_label_generation_module.merge import parse_source_file
from pseudo_label_generation_module.samples import sample_box_xyxy
from utils.cli import run_cli
from utils.errors import UsageError
from utils.io import check_writable_file, write_json

ENTITY_DEFINITION = ("entity: a maximal noun phrase naming an object, counted as the non-overlapping object-class "
                     "terms of the expression (class names and synonyms, singular or plural, longest first)")


def expression_statistics(samples: Sequence[Sequence[Any]], dataset: str, lexicon: Lexicon) -> Dict[str, Any]:
    """The statistics of one source's samples (see the module docstring)."""
    phrases = [str(s[LAYOUTS[dataset].query_field]) for s in samples]
    tokens = [words(p) for p in phrases]
    lengths = Counter(len(t) for t in tokens)
    n = len(phrases)
    return {
        "samples": n,
        "images": len({s[0] for s in samples}),
        "mean_entities": sum(lexicon.count_entities(p) for p in phrases) / n if n else None,
        "vocabulary_size": len({w for t in tokens for w in t}),
        "mean_length": sum(len(t) for t in tokens) / n if n else None,
        "length_histogram": {str(k): lengths[k] for k in sorted(lengths)},
    }


def box_agreement(samples: Sequence[Sequence[Any]], dataset: str, reference: Mapping[str, Sequence[Box]],
                  iou_threshold: float = 0.5) -> Dict[str, Any]:
    """How many samples have a box that overlaps a reference box of the same image (e.g. every annotated object)
    with IoU >= ``iou_threshold``; samples of images without reference boxes are not evaluated."""
    by_image: Dict[str, List[Box]] = {}
    for sample in samples:
        if reference.get(sample[0]):
            by_image.setdefault(sample[0], []).append(sample_box_xyxy(sample, dataset))
    evaluated = sum(map(len, by_image.values()))
    agreeing = sum(int((iou_matrix(boxes, reference[image]).max(dim=1).values >= iou_threshold).sum())
                   for image, boxes in by_image.items())
    return {"evaluated": evaluated, "agreeing": agreeing, "rate": agreeing / evaluated if evaluated else None,
            "iou_threshold": iou_threshold}


def reference_boxes(path: str, dataset: str) -> Dict[str, List[Box]]:
    """image -> annotated boxes of a (human) split file of ``dataset``."""
    out: Dict[str, List[Box]] = {}
    for sample in load_split_file(path, dataset):
        out.setdefault(sample[0], []).append(sample_box_xyxy(sample, dataset))
    return out


def msa_order(statistics: Dict[str, Dict[str, Any]]) -> List[str]:
    """Source names easy to hard by mean entities per expression (ties keep the given order; empty sources last)."""
    names = list(statistics)
    return sorted(names, key=lambda n: (statistics[n]["mean_entities"] is None,
                                        statistics[n]["mean_entities"] or 0.0, names.index(n)))


def parse_source_argument(text: str, dataset: str) -> Tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (named by the official pattern, else by its file name) -> ``(name, path)``."""
    if "=" in text and not os.path.exists(text):
        name, path = text.split("=", 1)
        if not name or not path:
            raise UsageError(f"bad source argument {text!r}: expected NAME=PATH or PATH")
        return name, path
    parsed = parse_source_file(text, dataset)
    return (parsed.source if parsed else os.path.splitext(os.path.basename(text))[0]), text


def source_statistics(sources: Sequence[Tuple[str, str]], dataset: str, lexicon: Lexicon,
                      reference: Optional[Mapping[str, Sequence[Box]]] = None) -> Dict[str, Any]:
    """Statistics of every ``(name, path)`` source (with ``box_agreement`` when ``reference`` boxes are given)
    and their MSA order."""
    stats: Dict[str, Dict[str, Any]] = {}
    for name, path in sources:
        if name in stats:
            raise UsageError(f"source {name!r} is given twice")
        samples = load_split_file(path, dataset)
        stats[name] = {"path": path, **expression_statistics(samples, dataset, lexicon)}
        if reference is not None:
            stats[name]["box_agreement"] = box_agreement(samples, dataset, reference)
    return {"dataset": dataset, "entity_definition": ENTITY_DEFINITION, "sources": stats,
            "msa_order": msa_order(stats)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m pseudo_label_generation_module.stats",
                                description="Per-source statistics of pseudo split files and the MSA order.")
    p.add_argument("sources", nargs="+", help="NAME=PATH or PATH of pseudo split files")
    p.add_argument("--dataset", required=True, choices=tuple(LAYOUTS))
    p.add_argument("--detections", action="append", default=[],
                   help="detections.json whose class names count as entities besides the built-in words "
                        "(repeatable)")
    p.add_argument("--synonyms", help="synonyms.json {class: [words]}: more entity words")
    p.add_argument("--reference", help="a human-annotated split file of the dataset: report how many pseudo boxes "
                                       "overlap an annotated box of their image (IoU >= 0.5)")
    p.add_argument("--output", help="statistics JSON to write")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.output:
        check_writable_file(args.output, "--output")
    classes = sorted({c for path in args.detections for c in class_names(load_detections(path))})
    lexicon = Lexicon(classes, load_synonyms(args.synonyms) if args.synonyms else None)
    reference = reference_boxes(args.reference, args.dataset) if args.reference else None
    report = source_statistics([parse_source_argument(s, args.dataset) for s in args.sources], args.dataset,
                               lexicon, reference)
    print(f"{'source':<16}{'samples':>9}{'images':>8}{'entities':>10}{'vocab':>7}{'length':>8}")
    for name, s in report["sources"].items():
        ent = "-" if s["mean_entities"] is None else f"{s['mean_entities']:.3f}"
        length = "-" if s["mean_length"] is None else f"{s['mean_length']:.2f}"
        agree = s.get("box_agreement", {}).get("rate")
        print(f"{name:<16}{s['samples']:>9}{s['images']:>8}{ent:>10}{s['vocabulary_size']:>7}{length:>8}"
              + ("" if agree is None else f"  agreement {agree:.3f}"))
    print(f"MSA order (easy to hard): {', '.join(report['msa_order'])}")
    if args.output:
        write_json(args.output, report)
    return report


if __name__ == "__main__":
    run_cli(main)
