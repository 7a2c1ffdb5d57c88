"""Data checker: ``python -m datasets.check --dataset unc --data_root ... --split_root ... [--splits a,b]``.

Walks every split of the dataset (a composed ``trainval`` is checked through ``train`` and ``val`` unless asked
for by name), and reports per split: samples, distinct images, missing images, bad samples and queries longer
than ``--max_query_len`` tokens (truncated in training, so a warning, not a problem). Images are only checked
for existence unless ``--verify_images`` (then each is opened and verified with PIL). Prints a table and exits
1 when anything is wrong (missing or unreadable split files that were asked for, missing or unreadable images,
bad samples, no split file at all), 0 otherwise. ``check_dataset`` returns the same report as a dict.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from PIL import Image

from datasets.grounding import missing_images, tokenize_queries
from datasets.records import (DATASETS, check_dataset_name, check_split_name, existing_splits, image_dir,
                              load_split_file, parse_records, split_paths)
from utils.args import get_args_parser
from utils.cli import run_cli
from utils.prompt import apply_prompt, check_prompt

EXAMPLES = 5
"""How many missing images / bad samples / unreadable images each split lists."""


def _unreadable_images(names: Sequence[str], folder: str) -> List[str]:
    bad = []
    for name in names:
        try:
            with Image.open(os.path.join(folder, name)) as img:
                img.verify()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            bad.append(f"{name}: {e}")
    return bad


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
    if verify_images:
        absent_names = {name for _, name in missing}
        unreadable = _unreadable_images([n for n in distinct if n not in absent_names], folder)
        row.update(unreadable_images=len(unreadable), unreadable_examples=unreadable[:EXAMPLES])
        if unreadable:
            row["problems"].append(f"{len(unreadable)} unreadable image(s), first: {unreadable[0]}")
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
    p.add_argument("--verify_images", action="store_true", help="open and verify every image with PIL")
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
