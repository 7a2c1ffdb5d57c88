"""Process scaling of evaluation and reliability scoring: the same split scored by 1, 2, ... processes
(``torchrun``, gloo on the CPU, NCCL on GPUs), one JSON object on stdout.

A synthetic world with a ``val`` split of ``--samples`` samples is generated, an untrained checkpoint of
``--model`` is written (its CLIP rebuilt from the spec: nothing is downloaded), then ``eval.py`` and
``eval_for_reliability_distribution.py`` run on it once per process count. Each run reports its prediction loop's
samples/s (``eval_samples_per_s``: loop and gather, without start-up); the speed-up is against the first process
count. Every run must score every sample exactly once with the same results, which is checked (``agree``).

    python benchmarks/benchmark_scaling.py --model ViT-B/16 --random_weights --nprocs 1 2 --threads_per_proc 1 \
        --samples 48 --batch_size 8
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import torch

from benchmarks._common import (build_benchmark_model, emit_from_work_dir, environment, last_json_object, model_spec,
                                positive_int, resolve_device, shared_args, synthetic_world)
from demo.synthetic import DATASET
from utils.checkpoint import save_checkpoint

SCRIPTS = {"eval": "eval.py", "reliability": "eval_for_reliability_distribution.py"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/benchmark_scaling.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--model", default="tiny", help="CLIP name, OpenAI CLIP file, random:<name>, or tiny")
    p.add_argument("--random_weights", action="store_true",
                   help="seeded random CLIP of the --model configuration (no download)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    p.add_argument("--nprocs", type=positive_int, nargs="+", default=[1, 2], help="process counts to compare")
    p.add_argument("--threads_per_proc", type=positive_int, default=1, help="OMP_NUM_THREADS of each process")
    p.add_argument("--scripts", nargs="+", choices=sorted(SCRIPTS), default=sorted(SCRIPTS))
    p.add_argument("--samples", type=positive_int, default=48, help="size of the scored split")
    p.add_argument("--batch_size", type=positive_int, default=8, help="per process")
    p.add_argument("--num_workers", type=int, default=0, help="loader workers per process")
    p.add_argument("--imsize", type=positive_int, default=224)
    p.add_argument("--image_size", type=positive_int, default=256, help="side of the synthetic images")
    p.add_argument("--work_dir", default=None, help="where the world is generated (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _world_and_checkpoint(work_dir: str, args: argparse.Namespace, spec: str) -> Dict[str, str]:
    """The world (``val`` cut to ``--samples``) and an untrained model-only checkpoint of ``spec``."""
    world = synthetic_world(work_dir, args.seed, args.image_size, "val", args.samples, "val",
                            f"--samples {args.samples}")
    model_args = shared_args(["--model", spec, "--imsize", str(args.imsize), "--vl_dropout", "0"])
    torch.manual_seed(args.seed)
    model = build_benchmark_model(model_args)
    checkpoint = save_checkpoint(os.path.join(work_dir, "model.pth"), model, None, None, 0, model_args, 0.0)
    return {**world, "checkpoint": checkpoint}


def _run(script: str, nproc: int, world: Dict[str, str], args: argparse.Namespace, out_dir: str
         ) -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = str(args.threads_per_proc)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(ROOT, SCRIPTS[script]), "--eval_model", world["checkpoint"], "--eval_set", "val",
           "--dataset", DATASET, "--data_root", world["data_root"], "--split_root", world["split_root"],
           "--output_dir", out_dir, "--device", args.device, "--batch_size", str(args.batch_size),
           "--num_workers", str(args.num_workers)]
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"{SCRIPTS[script]} on {nproc} processes failed:\n{done.stderr[-3000:]}")
    result = last_json_object(done.stdout)
    if result is None:
        raise RuntimeError(f"{SCRIPTS[script]} printed no JSON result")
    if script == "eval":
        scores = [result["val_set_accuracy"], result["val_set_miou"]]
    else:
        with open(result["reliability_file"]) as fh:
            scores = [json.loads(line)["iou"] for line in fh]
    return {"eval_samples_per_s": result["eval_samples_per_s"], "eval_seconds": result["eval_seconds"],
            "wall_s": round(wall, 2), "samples": result.get("samples", result.get("n")), "scores": scores}


def _agree(a: List[float], b: List[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-5 for x, y in zip(a, b))


def run(args: argparse.Namespace, work_dir: str) -> Dict[str, Any]:
    device = resolve_device(args.device)
    spec = model_spec(args.model, args.random_weights)
    world = _world_and_checkpoint(work_dir, args, spec)
    result: Dict[str, Any] = {}
    for script in args.scripts:
        runs = {n: _run(script, n, world, args, os.path.join(work_dir, f"{script}_{n}")) for n in args.nprocs}
        base = runs[args.nprocs[0]]
        result[script] = {
            str(n): {"eval_samples_per_s": r["eval_samples_per_s"], "eval_seconds": r["eval_seconds"],
                     "wall_s": r["wall_s"], "samples": r["samples"],
                     "speedup": round(r["eval_samples_per_s"] / base["eval_samples_per_s"], 3)}
            for n, r in runs.items()}
        result[script]["agree"] = all(_agree(r["scores"], base["scores"]) and r["samples"] == args.samples
                                      for r in runs.values())
    result["config"] = {"model": spec, "device": str(device), "nprocs": args.nprocs,
                        "threads_per_proc": args.threads_per_proc, "samples": args.samples,
                        "batch_size_per_proc": args.batch_size, "num_workers": args.num_workers,
                        "imsize": args.imsize, **environment(device),
                        "load_average_1m_end": round(os.getloadavg()[0], 2)}
    return result


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark for ``argv`` (like ``sys.argv[1:]``), print and return the JSON object."""
    return emit_from_work_dir(run, build_parser().parse_args(argv), "clipvg-bench-scaling-")


if __name__ == "__main__":
    main()
