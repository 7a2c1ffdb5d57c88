"""Command line for writing reliable subsets and merging them (``python -m curriculum.select``).

Select and merge (sources numbered 1, 2, ... in the order given)::

    python -m curriculum.select --dataset unc --out_dir OUT \\
        --source template SPLIT.pth RELIABILITY.jsonl 0.5 --source relation SPLIT.pth RELIABILITY.jsonl 0.4 \\
        [--link_splits_from SPLIT_ROOT] [--no_merge]

writes ``OUT/unc/train_separate/1_unc_train_pseudo_template_0_5.pth``, ``2_unc_train_pseudo_relation_0_4.pth`` and
the merge ``OUT/unc/unc_train_pseudo.pth``. RELIABILITY.jsonl is a per-sample file of the reliability script for
that split. With ``--link_splits_from`` the dataset's other split files are linked in, so OUT is a ready
``--split_root``. Merge an existing ``train_separate`` folder only::

    python -m curriculum.select --dataset unc --out_dir OUT --merge_dir OUT/unc/train_separate
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, Optional, Sequence

from curriculum.reliability import load_reliabilities
from curriculum.subset_files import link_other_splits, merge_separate_dir, write_separate
from datasets.records import load_split_file, split_path
from utils.cli import run_cli
from utils.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m curriculum.select", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out_dir", required=True, help="split root to write into (OUT/{dataset}/...)")
    p.add_argument("--source", nargs=4, action="append", default=[],
                   metavar=("NAME", "SPLIT_FILE", "RELIABILITY_JSONL", "H"),
                   help="one scored source and its threshold h: keeps reliability in [h, 1]; repeat per source")
    p.add_argument("--merge_dir", help="merge this train_separate folder instead of selecting")
    p.add_argument("--no_merge", action="store_true", help="write the per-source files only")
    p.add_argument("--link_splits_from", help="original split root whose other {dataset}_*.pth files to link in")
    return p


def _parse_threshold(text: str, name: str) -> float:
    try:
        h = float(text)
    except ValueError:
        raise UsageError(f"--source {name}: threshold {text!r} is not a number") from None
    if not 0.0 <= h <= 1.0:
        raise UsageError(f"--source {name}: threshold {h} must be in [0, 1]")
    return h


def run(args: argparse.Namespace) -> Dict[str, Any]:
    if bool(args.source) == bool(args.merge_dir):
        raise UsageError("give either --source (one or more) or --merge_dir")
    dataset_dir = os.path.join(args.out_dir, args.dataset)
    separate_dir = args.merge_dir or os.path.join(dataset_dir, "train_separate")
    report: Dict[str, Any] = {"dataset": args.dataset, "sources": []}
    for order, (name, split_file, jsonl, h_text) in enumerate(args.source, 1):
        h = _parse_threshold(h_text, name)
        samples = load_split_file(split_file, same_layout=True)
        r = load_reliabilities(jsonl, samples)
        path, count = write_separate(separate_dir, order, args.dataset, name, samples, r, h)
        report["sources"].append({"order": order, "source": name, "h": h, "file": path, "selected": count,
                                  "of": len(samples)})
    if not args.no_merge:
        merged = split_path(args.out_dir, args.dataset, "train_pseudo")
        report["merged"] = {"file": merged, "samples": merge_separate_dir(separate_dir, args.dataset, merged)}
    if args.link_splits_from:
        report["linked"] = link_other_splits(args.link_splits_from, args.dataset, args.out_dir,
                                             exclude=["train_pseudo"])
    return report


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    report = run(build_parser().parse_args(argv))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    run_cli(main)
