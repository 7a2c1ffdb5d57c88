"""Data checker: ``python -m datasets.check --dataset unc --data_root ... --split_root ... [--splits a,b]``.

Walks every split of the dataset (a composed ``trainval`` is checked through ``train`` and ``val`` unless asked
for by name), and reports per split: samples, distinct images, missing images, bad samples and queries longer
than ``--max_query_len`` tokens (truncated in training, so a warning, not a problem). Every present image's header
is read for its size (one whose header cannot be read is a warning; ``--verify_images`` makes it a problem),
and each box is placed on its image by the rule of ``utils.box_ops``: a box with nothing left
inside the image after clipping is *outside* (a problem: training skips such samples, evaluation refuses them); one
that only sticks out is *clipped* (a warning: it is used clipped to the image). ``--verify_images`` also decodes
every image fully, which finds truncated and corrupt files (PIL's ``verify()`` alone does not decode). Prints a
table and exits 1 when anything is wrong (missing or unreadable split files that were asked for, missing or
unreadable images, bad samples, boxes outside their image, no split file at all), 0 otherwise. ``check_dataset``
returns the same report as a dict.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from PIL import Image, ImageFile

from datasets.grounding import missing_images, tokenize_queries
from datasets.records import (DATASETS, check_dataset_name, check_split_name, existing_splits, image_dir,
                              load_split_file, parse_records, split_paths)
from utils.args import get_args_parser
from utils.box_ops import box_placement
from utils.cli import run_cli
from utils.prompt import apply_prompt, check_prompt

EXAMPLES = 5
"""How many missing images / bad samples / unreadable images each split lists."""


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """PIL raises on a truncated image while inside (``ImageFile.LOAD_TRUNCATED_IMAGES`` off, as it is by default,
    whatever another library may have set); the setting is restored after."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _image_sizes(names: Sequence[str], folder: str, decode: bool) -> Tuple[Dict[str, Tuple[int, int]], List[str]]:
    """``(width, height)`` of each image (read from its header, or by decoding it fully with ``decode``), and the
    ``"name: reason"`` of those that cannot be read."""
    sizes, bad = {}, []
    with _strict_decoding():
        for name in names:
            try:
                with Image.open(os.path.join(folder, name)) as img:
                    if decode:
                        img.load()
                    sizes[name] = img.size
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                bad.append(f"{name}: {e}")
    return sizes, bad


def _check_split(dataset: str, split: str, split_root: str, folder: str, verify_images: bool,
                 max_query_len: int, prompt: Optional[str]) -> Dict[str, Any]:
    paths = split_paths(split_root, dataset, split)
    row: Dict[str, Any] = {"files": paths, "problems": []}
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        row.update(status="absent", absent_files=absent)
        return row
    samples: List[Any] = []
    try:
        for path in paths:
            samples += load_split_file(path)
    except ValueError as e:
        row.update(status="unreadable")
        row["problems"].append(str(e))
        return row
    records, bad = parse_records(samples, dataset)
    missing = missing_images(records, folder)
    distinct = sorted({r.image for r in records})
    _, _, long = tokenize_queries([apply_prompt(r.query, prompt) for r in records], max_query_len)
    row.update(samples=len(samples), distinct_images=len(distinct), missing_images=len(missing),
               missing_examples=[f"{name} (sample {index})" for index, name in missing[:EXAMPLES]],
               bad_samples=len(bad), bad_examples=[str(e) for e in bad[:EXAMPLES]],
               long_queries=len(long), first_long_query=records[long[0]].index if long else None)
    absent_names = {name for _, name in missing}
    sizes, unreadable = _image_sizes([n for n in distinct if n not in absent_names], folder, verify_images)
    if verify_images:
        row.update(unreadable_images=len(unreadable), unreadable_examples=unreadable[:EXAMPLES])
        if unreadable:
            row["problems"].append(f"{len(unreadable)} unreadable image(s), first: {unreadable[0]}")
    else:
        row.update(unsized_images=len(unreadable), unsized_examples=unreadable[:EXAMPLES])
    placed: Dict[str, List[str]] = {"outside": [], "clipped": []}
    for r in records:
        if r.image in sizes:
            where = box_placement(r.box_xyxy, *sizes[r.image])
            if where in placed:
                placed[where].append(f"sample {r.index}: box {list(r.box_xyxy)} (x1, y1, x2, y2) on the "
                                     f"{sizes[r.image][0]}x{sizes[r.image][1]} image {r.image}")
    row.update(boxes_outside=len(placed["outside"]), outside_examples=placed["outside"][:EXAMPLES],
               boxes_clipped=len(placed["clipped"]), clipped_examples=placed["clipped"][:EXAMPLES])
    if placed["outside"]:
        row["problems"].append(f"{len(placed['outside'])} box(es) outside their image, first: {placed['outside'][0]}")
    if missing:
        row["problems"].append(f"{len(missing)} missing image(s), first: {row['missing_examples'][0]}")
    if bad:
        row["problems"].append(f"{len(bad)} bad sample(s), first: {bad[0]}")
    row["status"] = "problems" if row["problems"] else "ok"
    return row


def check_dataset(dataset: str, data_root: str, split_root: str, splits: Optional[Sequence[str]] = None,
                  verify_images: bool = False, max_query_len: int = 77, prompt: Optional[str] = None) -> Dict[str, Any]:
    """Check ``dataset``'s split files and images; returns the report (``report['ok']`` is the verdict).

    ``splits``: the splits to check (default: every split of the dataset; absent ones are then only reported,
    while an absent split that was asked for is a problem).
    """
    check_dataset_name(dataset)
    check_prompt(prompt)
    requested = bool(splits)
    for split in splits or ():
        check_split_name(dataset, split)
    if not requested:
        splits = [s for s in DATASETS[dataset] if s != "trainval" or dataset == "referit"]
    folder = image_dir(data_root, dataset)
    report: Dict[str, Any] = {
        "dataset": dataset, "image_dir": folder, "split_dir": os.path.join(split_root, dataset),
        "split_files_present": existing_splits(split_root, dataset), "splits": {}, "absent": [], "problems": [],
    }
    for split in splits:
        row = _check_split(dataset, split, split_root, folder, verify_images, max_query_len, prompt)
        report["splits"][split] = row
        if row["status"] == "absent":
            report["absent"].append(split)
            if requested:
                row["problems"].append(f"split file(s) absent: {', '.join(row['absent_files'])}")
        report["problems"] += [f"{split}: {p}" for p in row["problems"]]
    if len(report["absent"]) == len(splits):
        report["problems"].append(f"no split file of {dataset} found under {report['split_dir']}")
    report["ok"] = not report["problems"]
    return report


def format_report(report: Dict[str, Any]) -> str:
    """The report as a text table plus its problem lines."""
    head = ("split", "samples", "images", "missing", "bad", "long", "status")
    rows = [head]
    for split, row in report["splits"].items():
        rows.append((split, *(str(row.get(k, "-")) for k in ("samples", "distinct_images", "missing_images",
                                                              "bad_samples", "long_queries")), row["status"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"{report['dataset']}: split files in {report['split_dir']}, images in {report['image_dir']}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    for split, row in report["splits"].items():
        lines += [f"  {split}: missing image {m}" for m in row.get("missing_examples", [])]
        lines += [f"  {split}: bad {b}" for b in row.get("bad_examples", [])]
        lines += [f"  {split}: unreadable image {u}" for u in row.get("unreadable_examples", [])]
        lines += [f"  {split}: box outside its image: {b}" for b in row.get("outside_examples", [])]
        if row.get("unsized_images"):
            lines.append(f"  {split}: warning: {row['unsized_images']} image(s) whose size could not be read, so "
                         f"their boxes are not checked (first: {row['unsized_examples'][0]}); --verify_images "
                         "checks them")
        if row.get("boxes_clipped"):
            lines.append(f"  {split}: warning: {row['boxes_clipped']} box(es) stick out of their image and are used "
                         f"clipped to it (first: {row['clipped_examples'][0]})")
        if row.get("long_queries"):
            lines.append(f"  {split}: warning: {row['long_queries']} queries truncated to the token limit "
                         f"(first: sample {row['first_long_query']})")
    if report["absent"]:
        lines.append(f"absent splits: {', '.join(report['absent'])}")
    lines.append("OK" if report["ok"] else f"PROBLEMS ({len(report['problems'])}):")
    lines += [f"  {p}" for p in report["problems"]]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    shared = get_args_parser("train")
    p = argparse.ArgumentParser("python -m datasets.check", allow_abbrev=False,
                                description="Check a grounding dataset's split files and images.")
    p.add_argument("--dataset", required=True, choices=list(DATASETS))
    p.add_argument("--data_root", default=shared.get_default("data_root"))
    p.add_argument("--split_root", default=shared.get_default("split_root"))
    p.add_argument("--splits", default=None, help="comma-separated splits to check (default: all)")
    p.add_argument("--verify_images", action="store_true",
                   help="decode every image fully (finds truncated or corrupt files; slower)")
    p.add_argument("--max_query_len", type=int, default=shared.get_default("max_query_len"))
    p.add_argument("--prompt", default=None, help="the --prompt template used in training (for query lengths)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry; returns the exit status (0 = no problem)."""
    args = _parser().parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    report = check_dataset(args.dataset, args.data_root, args.split_root, splits, args.verify_images,
                           args.max_query_len, args.prompt)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    run_cli(main)
