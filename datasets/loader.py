"""Data loaders for training and evaluation (one place for samplers, workers and pinning)."""
from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.misc import get_rank, get_world_size


def build_loader(dataset: Dataset, args: argparse.Namespace, train: bool) -> DataLoader:
    """A loader over this process's shard of ``dataset``.

    Training shuffles with a seed shared by all ranks (``sampler.set_epoch`` varies it per epoch) and drops the
    last incomplete batch, as the official recipe does. Evaluation keeps split order; the distributed sampler
    pads the last shard by repeating samples, and ``engine.evaluate`` drops those repeats by sample index.
    A single process uses the same sampler with one replica, so one code path serves 1 or N processes.
    """
    sampler = DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=train,
                                 seed=args.seed, drop_last=False)
    workers = max(int(args.num_workers), 0)
    device = args.device if isinstance(args.device, torch.device) else torch.device(args.device or "cpu")
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        drop_last=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
