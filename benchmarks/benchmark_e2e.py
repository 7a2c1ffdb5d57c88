"""End-to-end training throughput: the real loader on the synthetic world feeding the real training step, one
JSON object on stdout.

The synthetic referring world (``demo.synthetic``) is generated into a work folder (its ``train_pseudo`` split:
the first ``steps * batch_size`` train samples), then training runs as ``train_clip_vg.py`` runs it (the default
unsupervised setting on ``train_pseudo``, recipe augmentation, ``build_loader``, ``build_optimizer``,
``engine.train_one_epoch``) for ``--warmup_epochs`` untimed and ``--epochs`` timed epochs of ``--steps`` batches
each. Validation and checkpointing are left out.

    python benchmarks/benchmark_e2e.py --model tiny --batch_size 8 --steps 10 --epochs 2 --num_workers 2
    python benchmarks/benchmark_e2e.py --model ViT-B/16 --random_weights --device cuda --batch_size 64 ...
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import torch

import engine
from benchmarks._common import (build_benchmark_model, emit_from_work_dir, environment, model_spec, non_negative_int,
                                peak_memory, positive_int, rate_summary, reset_peak_memory, resolve_device,
                                set_threads, shared_args, synchronize, synthetic_world)
from datasets import build_dataset
from datasets.loader import build_loader
from demo.synthetic import DATASET
from models import count_parameters
from train_clip_vg import build_optimizer

RECIPE_AUGMENTATION = ("--aug_crop", "--aug_scale", "--aug_translate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/benchmark_e2e.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--model", default="tiny", help="CLIP name, OpenAI CLIP file, random:<name>, or tiny")
    p.add_argument("--random_weights", action="store_true",
                   help="seeded random CLIP of the --model configuration (no download)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--steps", type=positive_int, default=10, help="batches per epoch")
    p.add_argument("--epochs", type=positive_int, default=2, help="timed epochs; median and best are reported")
    p.add_argument("--warmup_epochs", type=non_negative_int, default=1, help="untimed epochs first")
    p.add_argument("--num_workers", type=non_negative_int, default=2)
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="autocast: bf16 on the CPU or CUDA, fp16 on CUDA (default: off, fp32)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--imsize", type=positive_int, default=224)
    p.add_argument("--image_size", type=positive_int, default=256, help="side of the synthetic images")
    p.add_argument("--work_dir", default=None,
                   help="where the world is generated (kept and reused when given; default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace, work_dir: str) -> Dict[str, Any]:
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    start = time.perf_counter()
    world = synthetic_world(work_dir, args.seed, args.image_size, "train", args.steps * args.batch_size,
                            "train_pseudo", f"--steps {args.steps} --batch_size {args.batch_size}")
    generate_s = time.perf_counter() - start
    spec = model_spec(args.model, args.random_weights)
    project_args = shared_args(["--model", spec, "--imsize", str(args.imsize), "--dataset", DATASET,
                                "--data_root", world["data_root"],
                                "--split_root", world["split_root"], "--batch_size", str(args.batch_size),
                                "--num_workers", str(args.num_workers), "--device", str(device),
                                "--amp", args.amp, "--seed", str(args.seed), *RECIPE_AUGMENTATION])
    dataset = build_dataset("train_pseudo", project_args, train=True)
    loader = build_loader(dataset, project_args, train=True)
    torch.manual_seed(args.seed)
    model = build_benchmark_model(project_args).to(device)
    trainable, total = count_parameters(model)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], project_args, device)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and args.amp == "fp16" else None
    step_model = torch.compile(model) if args.compile else model
    env = environment(device)

    reset_peak_memory(device)
    rates = []
    for epoch in range(args.warmup_epochs + args.epochs):
        loader.sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        synchronize(device)
        tic = time.perf_counter()
        stats = engine.train_one_epoch(step_model, loader, optimizer, device, epoch, amp=args.amp,
                                       max_norm=project_args.clip_max_norm, scaler=scaler)
        synchronize(device)
        if epoch >= args.warmup_epochs:
            rates.append(stats.samples / (time.perf_counter() - tic))
    summary = rate_summary(rates)
    return {"train_samples_per_s": summary["median"], "train_samples_per_s_best": summary["best"],
            "train_runs": summary["runs"], **peak_memory(device),
            "config": {"model": spec, "device": str(device), "batch_size": args.batch_size,
                       "steps": len(loader), "epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
                       "num_workers": args.num_workers, "amp": args.amp,
                       "threads": threads, "compile": args.compile, "imsize": args.imsize,
                       "image_size": args.image_size, "augmentation": [a[2:] for a in RECIPE_AUGMENTATION],
                       "train_samples": len(dataset), "trainable_params": trainable, "total_params": total,
                       "generate_s": round(generate_s, 2), **env,
                       "load_average_1m_end": round(os.getloadavg()[0], 2)}}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark for ``argv`` (like ``sys.argv[1:]``), print and return the JSON object."""
    return emit_from_work_dir(run, build_parser().parse_args(argv), "clipvg-bench-e2e-")


if __name__ == "__main__":
    main()
