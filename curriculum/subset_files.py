"""Reliable subsets as split files, in the official layout and naming (docs/curriculum.md).

- ``write_separate``: percent(H, h) of one source (``reliability.select``) as a split file of its own;
- ``train_separate`` naming of the official multi-source release: ``{order}_{dataset}_train_pseudo_{source}_{h}.pth``
  with ``h`` written like ``0_5`` (``threshold_tag``); ``merge_separate_dir`` concatenates those files in order into
  one ``{dataset}_train_pseudo.pth`` (the official merge does the same).
- ``prepare_split_root``: a ready ``--split_root`` folder whose training split is a given sample list and whose other
  split files (val, test, ...) are symlinks to the originals (copies where symlinks are unavailable).
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Dict, List, Sequence, Tuple

from curriculum.reliability import select, threshold_units
from datasets.records import check_layout, load_split_file, split_path
from utils.errors import InputError
from utils.io import atomic_torch_save


def threshold_tag(h: float) -> str:
    """A threshold as written in file names: 0.5 -> '0_5', 0.25 -> '0_25', 1 -> '1_0', 0 -> '0_0'."""
    text = f"{threshold_units(h) / 1e9:.9f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return text.replace(".", "_")


def separate_name(order: int, dataset: str, source: str, h: float) -> str:
    """``{order}_{dataset}_train_pseudo_{source}_{h}.pth`` (the official ``train_separate`` naming)."""
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"order {order!r}: must be a positive integer")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9+\-]*", source):
        raise InputError(f"source name {source!r}: use letters, digits, '+' or '-' (no '_', which separates "
                         "the parts of train_separate file names)")
    return f"{order}_{dataset}_train_pseudo_{source}_{threshold_tag(h)}.pth"


def union(parts: Sequence[Sequence[Any]]) -> List[Any]:
    """Concatenate selections of several sources (in the given order); all parts must share one tuple layout."""
    merged: List[Any] = [s for part in parts for s in part]
    check_layout(merged, "union of selections")
    return merged


def write_separate(out_dir: str, order: int, dataset: str, source: str, samples: Sequence[Any],
                   reliabilities: Any, h: float) -> Tuple[str, int]:
    """Write percent(H, h) of one source as ``out_dir/{order}_{dataset}_train_pseudo_{source}_{h}.pth``;
    returns (path, number of samples)."""
    chosen = select(samples, reliabilities, h)
    path = os.path.join(out_dir, separate_name(order, dataset, source, h))
    atomic_torch_save(chosen, path)
    return path, len(chosen)


def list_separate(separate_dir: str, dataset: str) -> List[Tuple[int, str, str]]:
    """``(order, source, path)`` of every ``train_separate`` file of ``dataset`` in ``separate_dir`` (by name)."""
    pattern = re.compile(rf"^(\d+)_{re.escape(dataset)}_train_pseudo_(.+)_(\d+_\d+)\.pth$")
    if not os.path.isdir(separate_dir):
        return []
    return [(int(m.group(1)), m.group(2), os.path.join(separate_dir, name))
            for name in sorted(os.listdir(separate_dir)) if (m := pattern.match(name))]


def separate_files(separate_dir: str, dataset: str) -> List[Tuple[int, str, str]]:
    """The ``train_separate`` files of ``dataset`` sorted by order number; each order number must be unique."""
    found: Dict[int, Tuple[int, str, str]] = {}
    for entry in list_separate(separate_dir, dataset):
        if entry[0] in found:
            raise InputError(f"{separate_dir}: two files with order number {entry[0]}: "
                             f"{os.path.basename(found[entry[0]][2])} and {os.path.basename(entry[2])}")
        found[entry[0]] = entry
    if not found:
        raise InputError(f"{separate_dir}: no files named {{order}}_{dataset}_train_pseudo_{{source}}_{{h}}.pth")
    return [found[k] for k in sorted(found)]


def merge_split_files(paths: Sequence[str], out_path: str) -> int:
    """Concatenate split files in the given order into ``out_path`` (atomic); returns the sample count."""
    merged = union([load_split_file(p, same_layout=True) for p in paths])
    atomic_torch_save(merged, out_path)
    return len(merged)


def merge_separate_dir(separate_dir: str, dataset: str, out_path: str) -> int:
    """Merge a ``train_separate`` folder, in order-number order, into ``out_path``; returns the sample count."""
    return merge_split_files([path for _, _, path in separate_files(separate_dir, dataset)], out_path)


def _link_or_copy(src: str, dst: str) -> None:
    src = os.path.abspath(src)
    if os.path.lexists(dst):
        if os.path.islink(dst) and os.readlink(dst) == src:
            return
        os.remove(dst)
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def link_other_splits(original_split_root: str, dataset: str, out_split_root: str, exclude: Sequence[str]) -> List[str]:
    """Symlink (or copy) every ``{dataset}_*.pth`` of the original dataset folder, except the ``exclude`` splits,
    into ``out_split_root/{dataset}/``; returns the linked split names."""
    src_dir = os.path.join(original_split_root, dataset)
    if not os.path.isdir(src_dir):
        raise InputError(f"--split_root {original_split_root}: no folder {dataset}/ for dataset {dataset}")
    dst_dir = os.path.join(out_split_root, dataset)
    os.makedirs(dst_dir, exist_ok=True)
    skip = {f"{dataset}_{s}.pth" for s in exclude}
    linked = []
    for name in sorted(os.listdir(src_dir)):
        if name.startswith(f"{dataset}_") and name.endswith(".pth") and name not in skip:
            _link_or_copy(os.path.join(src_dir, name), os.path.join(dst_dir, name))
            linked.append(name[len(dataset) + 1:-4])
    return linked


def prepare_split_root(out_split_root: str, dataset: str, original_split_root: str, train_split: str,
                       train_samples: Sequence[Any]) -> str:
    """Make ``out_split_root`` a usable ``--split_root``: ``{dataset}/{dataset}_{train_split}.pth`` holds
    ``train_samples`` and the dataset's other split files link to the originals. Returns the training file path."""
    link_other_splits(original_split_root, dataset, out_split_root, exclude=[train_split])
    path = split_path(out_split_root, dataset, train_split)
    atomic_torch_save(list(train_samples), path)
    return path
