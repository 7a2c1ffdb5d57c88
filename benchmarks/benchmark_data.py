"""Data-pipeline throughput: samples/s of the real train and eval loaders over COCO-sized JPEGs, one JSON object.

A temporary RefCOCO-layout data set (``unc``: ``train_pseudo`` and ``val`` split files, synthetic 640x480-class
JPEGs) is written first; then ``datasets.build_dataset`` + ``datasets.loader.build_loader`` are iterated exactly
as training (recipe augmentation: ``--aug_crop --aug_scale --aug_translate``) and evaluation iterate them. The
first batch (worker start-up) is timed separately from the steady-state batches. A per-stage breakdown (JPEG
decode, PIL draft-mode decode for comparison, train and eval transforms; single process) shows where the time
goes.

    python benchmarks/benchmark_data.py --num_workers 2 --batch_size 8 --batches 20 --imsize 224
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import torch
from PIL import Image

from benchmarks._common import (emit_from_work_dir, environment, non_negative_int, positive_int, rate_summary,
                                resolve_device, set_threads, shared_args, synchronize, to_device)
from benchmarks._jpeg_world import DATASET, write_jpeg_world
from datasets import build_dataset
from datasets.grounding import GroundingDataset, load_image
from datasets.loader import build_loader

RECIPE_AUGMENTATION = ("--aug_crop", "--aug_scale", "--aug_translate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/benchmark_data.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--num_workers", type=non_negative_int, default=2)
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--batches", type=positive_int, default=20, help="timed batches per loader (after the first)")
    p.add_argument("--repeats", type=positive_int, default=1, help="timed passes; median and best are reported")
    p.add_argument("--imsize", type=positive_int, default=224)
    p.add_argument("--image_size", type=positive_int, default=640, help="long side of the generated JPEGs")
    p.add_argument("--images", type=positive_int, default=48, help="distinct JPEG files")
    p.add_argument("--stage_samples", type=non_negative_int, default=16,
                   help="samples timed per stage in the breakdown (0: skip it)")
    p.add_argument("--device", default="cpu", help="where batches go (cuda: pinned memory, as in training)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--work_dir", default=None, help="where the data set is written (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    return p


def loader_rates(dataset: GroundingDataset, args: argparse.Namespace, train: bool, batches: int, repeats: int,
                 device: torch.device) -> Dict[str, Any]:
    """Time ``repeats`` passes over a fresh ``build_loader`` (the first batch of each pass apart), moving every
    batch to ``device`` as the engine does."""
    loader = build_loader(dataset, args, train=train)
    first, rates = [], []
    for epoch in range(repeats):
        loader.sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        start = time.perf_counter()
        it = iter(loader)
        next(it)
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(batches):
            to_device(next(it), device)
        synchronize(device)
        rates.append(batches * args.batch_size / (time.perf_counter() - start))
        del it
    summary = rate_summary(rates)
    return {"samples_per_s": summary["median"], "samples_per_s_best": summary["best"], "runs": summary["runs"],
            "first_batch_s": round(min(first), 4)}


def stage_times(train_set: GroundingDataset, eval_set: GroundingDataset, n: int, imsize: int) -> Dict[str, float]:
    """Milliseconds per sample of each stage, in this process: full JPEG decode, draft-mode decode (reduced-scale
    DCT, not used by the loaders: it changes pixels), the train and the eval transform."""
    records = train_set.records[:n]
    paths = [train_set.image_path(r) for r in records]
    timings: Dict[str, float] = {}

    def clock(name: str, fn: Callable[[int], Any]) -> None:
        fn(0)  # first-call set-up stays out of the timing
        start = time.perf_counter()
        for i in range(len(records)):
            fn(i)
        timings[name] = round(1000 * (time.perf_counter() - start) / max(len(records), 1), 3)

    images = [load_image(p, r.index) for p, r in zip(paths, records)]

    def draft(i: int) -> None:
        with Image.open(paths[i]) as img:
            img.draft("RGB", (imsize, imsize))
            img.convert("RGB")

    clock("decode_ms", lambda i: load_image(paths[i], records[i].index))
    clock("decode_draft_ms", draft)
    clock("train_transform_ms", lambda i: train_set.transform(
        images[i], torch.tensor(records[i].box_xyxy, dtype=torch.float32), train_set.texts[i],
        train_set.augmentation_rng(records[i].index)))
    clock("eval_transform_ms", lambda i: eval_set.transform(
        images[i], torch.tensor(records[i].box_xyxy, dtype=torch.float32)))
    return timings


def run(args: argparse.Namespace, work_dir: str) -> Dict[str, Any]:
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    data_root, split_root = os.path.join(work_dir, "data"), os.path.join(work_dir, "splits")
    n_samples = (args.batches + 1) * args.batch_size
    start = time.perf_counter()
    files = write_jpeg_world(data_root, split_root, args.images, {"train_pseudo": n_samples, "val": n_samples},
                             image_size=args.image_size, seed=args.seed)
    generate_s = time.perf_counter() - start
    project_args = shared_args(["--dataset", DATASET, "--data_root", data_root, "--split_root", split_root,
                                "--imsize", str(args.imsize), "--batch_size", str(args.batch_size),
                                "--num_workers", str(args.num_workers), "--device", str(device),
                                "--seed", str(args.seed), *RECIPE_AUGMENTATION])
    train_set = build_dataset("train_pseudo", project_args, train=True)
    eval_set = build_dataset("val", project_args, train=False)
    env = environment(device)
    result: Dict[str, Any] = {}
    for name, dataset, train in (("train", train_set, True), ("eval", eval_set, False)):
        rates = loader_rates(dataset, project_args, train, args.batches, args.repeats, device)
        result.update({f"{name}_samples_per_s": rates["samples_per_s"],
                       f"{name}_samples_per_s_best": rates["samples_per_s_best"], f"{name}_runs": rates["runs"],
                       f"{name}_first_batch_s": rates["first_batch_s"]})
    if args.stage_samples:
        result["stages_ms_per_sample"] = stage_times(train_set, eval_set, args.stage_samples, args.imsize)
    result["config"] = {"dataset": DATASET, "num_workers": args.num_workers, "batch_size": args.batch_size,
                        "batches": args.batches, "repeats": args.repeats, "imsize": args.imsize,
                        "image_long_side": args.image_size, "images": args.images, "threads": threads,
                        "device": str(device), "augmentation": [a[2:] for a in RECIPE_AUGMENTATION],
                        "generate_s": round(generate_s, 2), **files, **env,
                        "load_average_1m_end": round(os.getloadavg()[0], 2)}
    return result


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark for ``argv`` (like ``sys.argv[1:]``), print and return the JSON object."""
    return emit_from_work_dir(run, build_parser().parse_args(argv), "clipvg-bench-data-")


if __name__ == "__main__":
    main()
