"""Merge per-source pseudo split files into one ``{dataset}_train_pseudo.pth`` (the official ``merge_file``).

Either the given files, concatenated in the given order, or the files of a folder named like the official
multi-source release (``train_separate``): ``{order}_{dataset}_train_pseudo_{source}[_{threshold}].pth``, e.g.
``1_unc+_train_pseudo_template_0_5.pth``, concatenated by their order number. Other ``.pth`` files in the folder
are listed and ignored; other files and sub-folders are skipped. The folder's merged file goes, as officially, to
``{folder}/{dataset}/{dataset}_train_pseudo.pth`` unless ``--output`` is given.

    python -m pseudo_label_generation_module.merge --dataset unc --folder path/unc/train_separate
    python -m pseudo_label_generation_module.merge --dataset unc --inputs a.pth b.pth --output unc_train_pseudo.pth
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from datasets.records import LAYOUTS, check_dataset_name, load_split_file
from pseudo_label_generation_module.samples import save_samples
from utils.cli import run_cli
from utils.errors import InputError, UsageError
from utils.io import check_writable_file

_THRESHOLD_SUFFIX = re.compile(r"(?:_\d+)+$")


@dataclass(frozen=True)
class SourceFile:
    """One ``{order}_{dataset}_train_pseudo_{source}[_{threshold}].pth`` file."""
    path: str
    order: int
    source: str
    threshold: Optional[str]


def parse_source_file(name: str, dataset: str) -> Optional[SourceFile]:
    """The parts of an official per-source file name, or None when ``name`` does not follow the pattern."""
    m = re.fullmatch(rf"(\d+)_{re.escape(dataset)}_train_pseudo_(.+)\.pth", os.path.basename(name))
    if m is None:
        return None
    rest = m.group(2)
    suffix = _THRESHOLD_SUFFIX.search(rest)
    source = rest[:suffix.start()] if suffix and suffix.start() > 0 else rest
    threshold = suffix.group(0)[1:] if suffix and suffix.start() > 0 else None
    return SourceFile(name, int(m.group(1)), source, threshold)


def source_files(folder: str, dataset: str) -> Tuple[List[SourceFile], List[str]]:
    """The per-source files of ``folder`` sorted by order number, and the other ``.pth`` files (ignored)."""
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: folder not found")
    found, ignored = [], []
    for name in sorted(os.listdir(folder)):
        if not os.path.isfile(os.path.join(folder, name)):
            continue
        parsed = parse_source_file(os.path.join(folder, name), dataset)
        if parsed is not None:
            found.append(parsed)
        elif name.endswith(".pth"):
            ignored.append(name)
    found.sort(key=lambda f: f.order)
    for a, b in zip(found, found[1:]):
        if a.order == b.order:
            raise InputError(f"{folder}: two files have order number {a.order}: "
                             f"{os.path.basename(a.path)} and {os.path.basename(b.path)}")
    if not found:
        raise InputError(f"{folder}: no file named {{order}}_{dataset}_train_pseudo_{{source}}[_{{h}}].pth")
    return found, ignored


def merge_files(paths: Sequence[str], dataset: str) -> List[tuple]:
    """The samples of ``paths`` concatenated in order (each file checked for ``dataset``'s layout)."""
    check_dataset_name(dataset)
    if not paths:
        raise UsageError("merge: no input files")
    merged: List[tuple] = []
    for path in paths:
        merged += load_split_file(path, dataset)
    return merged


def default_output(folder: str, dataset: str) -> str:
    """The official location of a folder's merged file: ``{folder}/{dataset}/{dataset}_train_pseudo.pth``."""
    return os.path.join(folder, dataset, f"{dataset}_train_pseudo.pth")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m pseudo_label_generation_module.merge",
                                description="Concatenate per-source pseudo split files.")
    p.add_argument("--dataset", required=True, choices=tuple(LAYOUTS))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", nargs="+", help="pseudo split files, merged in this order")
    src.add_argument("--folder", help="folder of {order}_{dataset}_train_pseudo_{source}[_{h}].pth files")
    p.add_argument("--output", help="merged file (default with --folder: FOLDER/DATASET/DATASET_train_pseudo.pth)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = build_parser().parse_args(argv)
    if args.folder:
        files, ignored = source_files(args.folder, args.dataset)
        for name in ignored:
            print(f"merge: ignoring {name} (not named {{order}}_{args.dataset}_train_pseudo_{{source}}[_{{h}}].pth)")
        paths = [f.path for f in files]
        output = args.output or default_output(args.folder, args.dataset)
    else:
        if not args.output:
            raise UsageError("--output is required with --inputs")
        paths, output = args.inputs, args.output
    check_writable_file(output, "--output")
    merged = merge_files(paths, args.dataset)
    for path in paths:
        print(f"merge: {path}")
    save_samples(merged, output)
    print(f"merge: {len(merged)} samples from {len(paths)} files -> {output}")
    return output


if __name__ == "__main__":
    run_cli(main)
