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
downloaded. ``--paths reference`` runs the straightforward forward pass (``benchmarks/reference_forward.py``)
instead of the model's. ``--compare reference`` (or ``bf16``, ``off``) times a second variant on the same model
and batches, interleaved with the first (A, B, A, B, ...: machine noise hits both alike), and reports its rates and
the ratios under ``compare``:

    python benchmarks/benchmark_model.py --model ViT-B/16 --random_weights --device cpu --threads 2 \
        --batch_size 8 --steps 3 --warmup 1 --repeats 5 --compare reference

``forward_gflops_per_sample`` counts the work of one forward pass (``torch.utils.flop_counter``); with
``--compare reference`` the reference's count and ``forward_flop_ratio`` (reference over this repository: the
speed-up that doing less work alone gives, at equal FLOP rates) come under ``compare``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import engine
from benchmarks._common import (build_benchmark_model, emit, environment, model_spec, non_negative_int, peak_memory,
                                positive_int, rate_summary, reset_peak_memory, resolve_device, set_threads,
                                shared_args, synthetic_batch, timed, to_device)
from benchmarks.reference_forward import ReferenceModel
from models import count_parameters
from models.clip_vg import CLIPVG
from models.onednn_linear import matmul_backend
from train_clip_vg import build_optimizer

PATHS = ("fast", "reference")
COMPARE = ("reference", "bf16", "off")


@dataclass
class Variant:
    """One timed computation: a module (the model or its reference forward pass) under an ``--amp`` setting."""
    name: str
    model: nn.Module
    amp: str


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
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="autocast: bf16 on the CPU or CUDA, fp16 on CUDA (default: off, fp32)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions on CUDA")
    p.add_argument("--imsize", type=positive_int, default=224)
    p.add_argument("--max_query_len", type=positive_int, default=77)
    p.add_argument("--clip_max_norm", type=float, default=0.0, help="gradient clipping (recipe: 0 = off)")
    p.add_argument("--mode", default="both", choices=["both", "train", "eval"])
    p.add_argument("--paths", default="fast", choices=PATHS,
                   help="fast: the model's forward pass; reference: the straightforward one it is checked against")
    p.add_argument("--compare", default=None, choices=COMPARE,
                   help="also time, interleaved with the main variant, the reference forward pass (reference) or "
                        "the main one with --amp bf16 / off; rates and ratios under 'compare'")
    p.add_argument("--no_check_outputs", dest="check_outputs", action="store_false",
                   help="skip comparing one batch's boxes with the reference forward pass")
    p.add_argument("--seed", type=int, default=0)
    return p


def _batches(args: argparse.Namespace, count: int, device: torch.device, generator: torch.Generator
             ) -> List[Dict[str, torch.Tensor]]:
    distinct = [to_device(synthetic_batch(args.batch_size, args.imsize, args.max_query_len, generator,
                                          start_index=i * args.batch_size), device) for i in range(min(count, 4))]
    return [distinct[i % len(distinct)] for i in range(count)]


def _train_steps(variant: Variant, trainable: List[nn.Parameter], project_args: argparse.Namespace,
                 args: argparse.Namespace, device: torch.device) -> Callable[[List[Dict[str, torch.Tensor]]], None]:
    """A function running ``engine.train_one_epoch`` of ``variant`` over a list of batches (its own optimizer)."""
    optimizer = build_optimizer(trainable, project_args, device)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and variant.amp == "fp16" else None

    def epoch(batches: List[Dict[str, torch.Tensor]]) -> None:
        engine.train_one_epoch(variant.model, batches, optimizer, device, 0, amp=variant.amp,
                               max_norm=args.clip_max_norm, scaler=scaler)
    return epoch


def _eval_steps(variant: Variant, device: torch.device) -> Callable[[List[Dict[str, torch.Tensor]]], None]:
    """A function running ``engine.evaluate`` of ``variant`` over a list of batches."""
    return lambda batches: engine.evaluate(variant.model, batches, device, variant.amp)


def _interleaved_rates(runners: List[Callable[[List[Dict[str, torch.Tensor]]], None]], args: argparse.Namespace,
                       device: torch.device, generator: torch.Generator) -> List[List[float]]:
    """Samples/s of each runner over ``--repeats`` timed runs, the runners taking turns in every repeat (A, B, A,
    B, ...) on the same batches after their warm-up steps."""
    if args.warmup:
        warmup = _batches(args, args.warmup, device, generator)
        for run in runners:
            timed(lambda: run(warmup), device)
    timed_batches = _batches(args, args.steps, device, generator)
    rates: List[List[float]] = [[] for _ in runners]
    for _ in range(args.repeats):
        for run, out in zip(runners, rates):
            out.append(args.steps * args.batch_size / timed(lambda: run(timed_batches), device))
    return rates


@torch.no_grad()
def _box_difference(variant: Variant, baseline: Variant, batch: Dict[str, torch.Tensor], device: torch.device
                    ) -> float:
    """Largest absolute difference between the boxes of ``variant`` and of ``baseline`` (each under its own
    ``--amp``) on ``batch`` in eval mode."""
    boxes = []
    for v in (variant, baseline):
        was_training = v.model.training
        v.model.eval()
        with engine.autocast(device, v.amp):
            boxes.append(v.model(batch["img"], batch["img_mask"], batch["text"]).float())
        v.model.train(was_training)
    return (boxes[0] - boxes[1]).abs().max().item()


def _cpu_sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of the CPU flash-attention kernel (the counter knows only the CUDA ones): those of any SDPA."""
    return sdpa_flop_count(query, key, value)


@torch.no_grad()
def forward_gflops_per_sample(model: nn.Module, batch: Dict[str, torch.Tensor]) -> float:
    """GFLOPs of one eval-mode forward pass per sample, counted by ``torch.utils.flop_counter`` (matmuls,
    convolutions, attention) with the matmuls on the default BLAS (the counter knows no oneDNN op; the products
    are the same)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops})
    try:
        with matmul_backend("blas"), counter:
            model(batch["img"], batch["img_mask"], batch["text"])
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9 / batch["img"].shape[0]


def _compare_variant(args: argparse.Namespace, main_variant: Variant, core: CLIPVG) -> Variant:
    if args.compare == "reference":
        return Variant("reference", ReferenceModel(core), main_variant.amp)
    return Variant(f"{main_variant.name}+amp={args.compare}", main_variant.model, args.compare)


def _ratios(a: List[float], b: List[float]) -> Dict[str, float]:
    """Main over compared: the ratio of the medians, and the median of the per-repeat ratios."""
    return {"ratio_of_medians": round(statistics.median(a) / statistics.median(b), 4),
            "median_ratio": round(statistics.median(x / y for x, y in zip(a, b)), 4)}


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
    plain: nn.Module = core if args.paths == "fast" else ReferenceModel(core)
    module = torch.compile(plain) if args.compile else plain
    main_variant = Variant(args.paths, module, args.amp)
    variants = [main_variant] + ([_compare_variant(args, main_variant, core)] if args.compare else [])
    generator = torch.Generator().manual_seed(args.seed)

    reset_peak_memory(device)
    result: Dict[str, Any] = {}
    compared: Dict[str, Any] = {"variant": variants[-1].name, "amp": variants[-1].amp} if args.compare else {}
    for mode, runners in (("train", [_train_steps(v, params, project_args, args, device) for v in variants]),
                          ("eval", [_eval_steps(v, device) for v in variants])):
        if args.mode not in ("both", mode):
            continue
        rates = _interleaved_rates(runners, args, device, generator)
        summary = rate_summary(rates[0])
        result.update({f"{mode}_samples_per_s": summary["median"], f"{mode}_samples_per_s_best": summary["best"],
                       f"{mode}_runs": summary["runs"]})
        if args.compare:
            other = rate_summary(rates[1])
            compared.update({f"{mode}_samples_per_s": other["median"], f"{mode}_runs": other["runs"],
                             f"{mode}_ratio": _ratios(rates[0], rates[1])})
    result.update(peak_memory(device))
    check_batch = _batches(args, 1, device, torch.Generator().manual_seed(args.seed + 1))[0]
    if args.check_outputs:
        reference = Variant("reference", ReferenceModel(core), "off")
        uncompiled = Variant(args.paths, plain, args.amp)
        result["max_abs_box_diff_vs_reference"] = _box_difference(uncompiled, reference, check_batch, device)
        if args.compare:
            other = _compare_variant(args, uncompiled, core)
            compared["max_abs_box_diff_vs_main"] = _box_difference(other, uncompiled, check_batch, device)
    result["forward_gflops_per_sample"] = round(forward_gflops_per_sample(plain, check_batch), 4)
    if args.compare == "reference":
        compared["forward_gflops_per_sample"] = round(forward_gflops_per_sample(ReferenceModel(core), check_batch), 4)
        compared["forward_flop_ratio"] = round(compared["forward_gflops_per_sample"]
                                               / result["forward_gflops_per_sample"], 4)
    if args.compare:
        result["compare"] = compared
    result["config"] = {
        "model": spec, "device": str(device), "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup, "repeats": args.repeats, "amp": args.amp,
        "threads": threads, "compile": args.compile, "tf32": args.tf32 and device.type == "cuda",
        "imsize": args.imsize, "max_query_len": args.max_query_len, "clip_max_norm": args.clip_max_norm,
        "paths": args.paths, "optimizer": project_args.optimizer, "trainable_params": trainable,
        "total_params": total, **env, "load_average_1m_end": round(os.getloadavg()[0], 2),
    }
    return emit(result)


if __name__ == "__main__":
    main()
