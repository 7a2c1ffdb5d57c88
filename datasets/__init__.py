"""Grounding datasets (docs/method.md#data): records, transforms, the torch Dataset and its builder.

``build_dataset(split, args, train=None)`` is the one entry point the scripts use; ``DATASETS`` maps each dataset
name to its splits.
"""
from __future__ import annotations

import argparse
from typing import Optional

from datasets.cache import DataCache
from datasets.grounding import GroundingDataset, ImageLoadError
from datasets.records import (DATASETS, TRAIN_SPLITS, BadSampleError, GroundingRecord, record_to_tuple,
                              tuple_to_record)
from datasets.transforms import build_transform, canvas_to_original

__all__ = ["DATASETS", "BadSampleError", "DataCache", "GroundingDataset", "GroundingRecord", "ImageLoadError",
           "build_dataset", "canvas_to_original", "record_to_tuple", "tuple_to_record"]


def build_dataset(split: str, args: argparse.Namespace, train: Optional[bool] = None,
                  cache: Optional[DataCache] = None) -> GroundingDataset:
    """``split`` of ``--dataset`` with the train transforms when ``train`` (default: split is train or
    train_pseudo) and the eval transforms otherwise. Training skips bad samples unless
    ``--no-skip_bad_samples``; evaluation never does. ``cache``: the ``DataCache`` shared with the caller's other
    data sets (default: the data set's own)."""
    train = split in TRAIN_SPLITS if train is None else train
    return GroundingDataset(
        args.dataset, split, args.data_root, args.split_root, build_transform(args, train),
        max_query_len=args.max_query_len, prompt=args.prompt,
        skip_bad=train and getattr(args, "skip_bad_samples", True), seed=args.seed,
        cache_images=getattr(args, "cache_images", False), cache=cache)
