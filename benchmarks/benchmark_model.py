"""Model throughput: samples/s of a full training step and of an inference step, one JSON object on stdout.

The training step is ``engine.train_one_epoch`` itself (forward, ``models.loss.grounding_loss``, backward,
optional gradient clipping, the optimizer of ``train_clip_vg.build_optimizer``: fused AdamW on CUDA), the
inference step ``engine.evaluate`` (eval mode, no autograd). Batches are synthetic but shaped like real ones
(COCO-shaped padding masks, RefCOCO-style queries) and are made on the device beforehand, so the data pipeline
is not measured here (see benchmark_data.py / benchmark_e2e.py).

    python benchmarks/benchmark_model.py --model ViT-B/16 --random_weights --device cpu --threads 2 \
        --batch_size 8 --steps 5 --warmup 1 --repeats 3

``--model`` is a CLIP name, an OpenAI CLIP file, or (with ``--random_weights``, or spelt ``random:<name>``) a
seeded random CLIP of a known configuration (``ViT-B/16``, ``ViT-B/32``, ``ViT-L/14``, ``tiny``): nothing is
downloaded. ``--paths reference`` runs the straightforward forward pass instead of the exact speed-ups.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import torch
from torch import nn

import engine
from benchmarks._common import (build_benchmark_model, emit, environment, model_spec, non_negative_int, peak_memory,
                                positive_int, rate_summary, reset_peak_memory, resolve_device, set_threads,
                                shared_args, synthetic_batch, timed, to_device)
from models import count_parameters
from models.clip_vg import FAST, REFERENCE, CLIPVG, ExactPaths
from train_clip_vg import build_optimizer

PATHS = {"fast": FAST, "reference": REFERENCE}


class WithPaths(nn.Module):
    """Calls a ``CLIPVG`` with a fixed ``ExactPaths`` choice (how ``--paths reference`` reaches the engine)."""

    def __init__(self, model: CLIPVG, paths: ExactPaths) -> None:
        super().__init__()
        self.model, self.paths = model, paths

    def forward(self, img: torch.Tensor, img_mask: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.model(img, img_mask, text, paths=self.paths)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/benchmark_model.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--model", default="ViT-B/16", help="CLIP name, OpenAI CLIP file, or random:<name>")
    p.add_argument("--random_weights", action="store_true",
                   help="seeded random CLIP of the --model configuration (no download)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--steps", type=positive_int, default=5, help="timed steps per repeat")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="untimed steps before timing")
    p.add_argument("--repeats", type=positive_int, default=1, help="timed runs; median and best are reported")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="autocast on CUDA (CPU: fp32)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions on CUDA")
    p.add_argument("--imsize", type=positive_int, default=224)
    p.add_argument("--max_query_len", type=positive_int, default=77)
    p.add_argument("--clip_max_norm", type=float, default=0.0, help="gradient clipping (recipe: 0 = off)")
    p.add_argument("--mode", default="both", choices=["both", "train", "eval"])
    p.add_argument("--paths", default="fast", choices=sorted(PATHS),
                   help="fast: the model's exact speed-ups; reference: the straightforward forward pass")
    p.add_argument("--no_check_outputs", dest="check_outputs", action="store_false",
                   help="skip comparing one batch's boxes with the reference forward pass")
    p.add_argument("--seed", type=int, default=0)
    return p


def _batches(args: argparse.Namespace, count: int, device: torch.device, generator: torch.Generator
             ) -> List[Dict[str, torch.Tensor]]:
    distinct = [to_device(synthetic_batch(args.batch_size, args.imsize, args.max_query_len, generator,
                                          start_index=i * args.batch_size), device) for i in range(min(count, 4))]
    return [distinct[i % len(distinct)] for i in range(count)]


def _train_rates(model: nn.Module, trainable: List[nn.Parameter], project_args: argparse.Namespace,
                 args: argparse.Namespace, device: torch.device, generator: torch.Generator) -> List[float]:
    optimizer = build_optimizer(trainable, project_args, device)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and args.amp == "fp16" else None

    def epoch(batches: List[Dict[str, torch.Tensor]]) -> None:
        engine.train_one_epoch(model, batches, optimizer, device, 0, amp=args.amp, max_norm=args.clip_max_norm,
                               scaler=scaler)

    if args.warmup:
        timed(lambda: epoch(_batches(args, args.warmup, device, generator)), device)
    timed_batches = _batches(args, args.steps, device, generator)
    return [args.steps * args.batch_size / timed(lambda: epoch(timed_batches), device)
            for _ in range(args.repeats)]


def _eval_rates(model: nn.Module, args: argparse.Namespace, device: torch.device,
                generator: torch.Generator) -> List[float]:
    def run(batches: List[Dict[str, torch.Tensor]]) -> None:
        engine.evaluate(model, batches, device, args.amp)

    if args.warmup:
        timed(lambda: run(_batches(args, args.warmup, device, generator)), device)
    timed_batches = _batches(args, args.steps, device, generator)
    return [args.steps * args.batch_size / timed(lambda: run(timed_batches), device) for _ in range(args.repeats)]


@torch.no_grad()
def _box_difference(model: CLIPVG, paths: ExactPaths, args: argparse.Namespace, device: torch.device
                    ) -> float:
    """Largest absolute difference between the boxes of ``paths`` and of the straightforward forward pass
    (``REFERENCE``) on one eval-mode batch: how far the timed computation is from the official one."""
    batch = _batches(args, 1, device, torch.Generator().manual_seed(args.seed + 1))[0]
    was_training = model.training
    model.eval()
    boxes = [model(batch["img"], batch["img_mask"], batch["text"], paths=p).float() for p in (paths, REFERENCE)]
    model.train(was_training)
    return (boxes[0] - boxes[1]).abs().max().item()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark for ``argv`` (like ``sys.argv[1:]``), print and return the JSON object."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    if args.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    spec = model_spec(args.model, args.random_weights)
    project_args = shared_args(["--model", spec, "--imsize", str(args.imsize), "--max_query_len",
                                str(args.max_query_len), "--device", str(device), "--seed", str(args.seed),
                                "--batch_size", str(args.batch_size), "--amp", args.amp])
    env = environment(device)
    torch.manual_seed(args.seed)
    core = build_benchmark_model(project_args).to(device)
    trainable, total = count_parameters(core)
    params = [p for p in core.parameters() if p.requires_grad]
    model: nn.Module = core if args.paths == "fast" else WithPaths(core, PATHS[args.paths])
    if args.compile:
        model = torch.compile(model)
    generator = torch.Generator().manual_seed(args.seed)

    reset_peak_memory(device)
    result: Dict[str, Any] = {}
    if args.mode in ("both", "train"):
        train = rate_summary(_train_rates(model, params, project_args, args, device, generator))
        result.update(train_samples_per_s=train["median"], train_samples_per_s_best=train["best"],
                      train_runs=train["runs"])
    if args.mode in ("both", "eval"):
        evaluation = rate_summary(_eval_rates(model, args, device, generator))
        result.update(eval_samples_per_s=evaluation["median"], eval_samples_per_s_best=evaluation["best"],
                      eval_runs=evaluation["runs"])
    result.update(peak_memory(device))
    if args.check_outputs:
        result["max_abs_box_diff_vs_reference"] = _box_difference(core, PATHS[args.paths], args, device)
    result["config"] = {
        "model": spec, "device": str(device), "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup, "repeats": args.repeats, "amp": args.amp if device.type == "cuda" else "off",
        "threads": threads, "compile": args.compile, "tf32": args.tf32 and device.type == "cuda",
        "imsize": args.imsize, "max_query_len": args.max_query_len, "clip_max_norm": args.clip_max_norm,
        "paths": args.paths, "optimizer": project_args.optimizer, "trainable_params": trainable,
        "total_params": total, **env, "load_average_1m_end": round(os.getloadavg()[0], 2),
    }
    return emit(result)


if __name__ == "__main__":
    main()
