"""The GPU check: smoke tests of every entry script and the benchmarks on one machine, one JSON summary on stdout.

Run through ``benchmarks/gpu_check.sh`` (no data or weights needed: a synthetic world and a seeded random ViT-B/16
CLIP). Each check is a fresh process with a time limit; the whole run keeps to ``--budget_s`` (default 480 s:
checks that would start after it are reported as skipped, and a running check is stopped 60 s after it, so the
whole run takes at most ``--budget_s`` + 60 s). Checks, in order:

- training (``train_clip_vg.py``, a few optimizer steps and the validation pass) in fp32 and bf16; evaluation
  (``eval.py``), reliability scoring (``eval_for_reliability_distribution.py``) and inference (``inference.py``)
  in fp32 and bf16 with the fp32 run's checkpoint;
- with 2 or more GPUs visible (or ``--ddp`` on the CPU, gloo): training and evaluation on 2 processes (NCCL);
- ``benchmark_model.py`` at batch 64 and 128 (bf16 on CUDA), and ``benchmark_e2e.py`` (the real loader feeding
  the real training step);
- training with ``--compile`` in fp32 and bf16.

``--tiny`` (what ``DEVICE=cpu`` selects in the shell script) runs the same checks with a tiny CLIP at 64 px and
small batches, so the whole script is tested on the CPU up to the device.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import torch

from benchmarks._common import emit, last_json_object, positive_int
from demo.synthetic import SyntheticConfig, generate

GOALS = {"train_samples_per_s_per_gpu": 1000.0, "inference_samples_per_s_per_gpu": 3000.0}
"""Per-GPU throughput targets at 224 px with the data pipeline included."""
GRACE_S = 60
"""A check running when the budget is spent may go on this much longer."""


@dataclass(frozen=True)
class Sizes:
    """What the checks run on: model, image sizes, batches, steps, loader workers, world size."""
    model: str
    imsize: int
    image_size: int
    batch_size: int
    train_steps: int
    bench_batches: tuple
    bench_steps: int
    bench_warmup: int
    num_workers: int
    train_images: int
    val_images: int


FULL = Sizes("random:ViT-B/16", 224, 256, 64, 8, (64, 128), 10, 2, 8, 200, 200)
TINY = Sizes("random:tiny", 64, 64, 4, 2, (4, 8), 1, 0, 0, 4, 2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny CLIP, 64 px, small batches (the CPU dry run)")
    p.add_argument("--ddp", action="store_true",
                   help="run the 2-process checks even with fewer than 2 GPUs (on the CPU: gloo)")
    p.add_argument("--no_compile", dest="compile", action="store_false",
                   help="leave out the --compile checks (on the CPU, compiling takes minutes)")
    p.add_argument("--budget_s", type=positive_int, default=420,
                   help="skip checks that would start after this many seconds (default 420: at most 8 minutes)")
    p.add_argument("--check_timeout_s", type=positive_int, default=300, help="time limit of one check")
    p.add_argument("--work_dir", default=None, help="keep the world, checkpoints and logs here (default: temp)")
    return p


def make_world(work_dir: str, sizes: Sizes) -> Dict[str, str]:
    """A synthetic world with ``train_pseudo`` = its train split; returns the folders and one image path."""
    data, splits = os.path.join(work_dir, "data"), os.path.join(work_dir, "splits")
    generate(data, splits, SyntheticConfig(n_train_images=sizes.train_images, n_val_images=sizes.val_images,
                                           n_testA_images=1, n_testB_images=1, n_pretrain=0,
                                           image_size=sizes.image_size))
    folder = os.path.join(splits, "synthetic")
    train = torch.load(os.path.join(folder, "synthetic_train.pth"), weights_only=True)
    torch.save(train, os.path.join(folder, "synthetic_train_pseudo.pth"))
    images = os.path.join(data, "synthetic", "images")
    return {"data": data, "splits": splits, "image": os.path.join(images, sorted(os.listdir(images))[0])}


class Runner:
    """Runs checks as subprocesses under a time budget and keeps their results."""

    def __init__(self, budget_s: float, check_timeout_s: float, log_dir: str) -> None:
        self.start = time.perf_counter()
        self.budget_s, self.check_timeout_s, self.log_dir = budget_s, check_timeout_s, log_dir
        self.checks: Dict[str, Dict[str, Any]] = {}

    def run(self, name: str, argv: List[str]) -> Optional[Any]:
        """Run ``argv`` (a Python script and its flags, or ``-m module ...``) as check ``name``; returns its JSON."""
        elapsed = time.perf_counter() - self.start
        if elapsed > self.budget_s:
            self.checks[name] = {"ok": False, "skipped": f"time budget of {self.budget_s:.0f} s spent"}
            return None
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        timeout = max(1.0, min(self.check_timeout_s, self.budget_s + GRACE_S - elapsed))
        log = os.path.join(self.log_dir, f"{name}.log")
        try:
            done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                                  timeout=timeout)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out = None, exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")) + \
                f"\ntimed out after {timeout:.0f} s"
        with open(log, "w") as fh:
            fh.write(f"$ {' '.join([sys.executable, *argv])}\n--- stdout\n{out}\n--- stderr\n{err}")
        entry: Dict[str, Any] = {"ok": rc == 0, "seconds": round(time.perf_counter() - tic, 1), "log": log}
        result = last_json_object(out) if rc == 0 else None
        if rc != 0:
            entry["error"] = (err.strip().splitlines() or ["(no output)"])[-1][-300:]
        elif result is not None:
            entry["result"] = result
        self.checks[name] = entry
        return result


def run_checks(args: argparse.Namespace, work_dir: str) -> Dict[str, Any]:
    sizes = TINY if args.tiny else FULL
    device = torch.device(args.device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and gpus == 0:
        raise SystemExit("gpu_check: --device cuda but no CUDA device is visible (DEVICE=cpu runs the dry run)")
    log_dir = os.path.join(work_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    runner = Runner(args.budget_s, args.check_timeout_s, log_dir)
    tic = time.perf_counter()
    world = make_world(work_dir, sizes)
    world_s = time.perf_counter() - tic
    amps = ("off", "bf16")
    common = ["--model", sizes.model, "--imsize", str(sizes.imsize), "--dataset", "synthetic",
              "--data_root", world["data"], "--split_root", world["splits"], "--device", args.device,
              "--num_workers", str(sizes.num_workers), "--batch_size", str(sizes.batch_size)]

    def out(name: str) -> List[str]:
        return ["--output_dir", os.path.join(work_dir, name)]

    def train(compiled: bool) -> None:
        for amp in amps:
            name = f"train_{'fp32' if amp == 'off' else amp}{'_compile' if compiled else ''}"
            runner.run(name, ["train_clip_vg.py", *common, *out(name), "--epochs", "1", "--max_steps",
                              str(sizes.train_steps), "--amp", amp, *(["--compile"] if compiled else [])])

    train(compiled=False)
    checkpoint = os.path.join(work_dir, "train_fp32", "best_checkpoint.pth")
    for amp in amps:
        tag = "fp32" if amp == "off" else amp
        scored = ["--eval_model", checkpoint, "--amp", amp]
        runner.run(f"eval_{tag}", ["eval.py", *common, *out(f"eval_{tag}"), *scored, "--eval_set", "val"])
        runner.run(f"reliability_{tag}", ["eval_for_reliability_distribution.py", *common, *out(f"rel_{tag}"),
                                          *scored, "--eval_set", "train_pseudo"])
        runner.run(f"inference_{tag}", ["inference.py", "--device", args.device, *scored, "--image",
                                        world["image"], "--query", "the object on the left"])
    if gpus >= 2 or args.ddp:
        launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        runner.run("ddp_train", [*launch, "train_clip_vg.py", *common, *out("ddp_train"), "--epochs", "1",
                                 "--max_steps", str(sizes.train_steps)])
        runner.run("ddp_eval", [*launch, "eval.py", *common, *out("ddp_eval"), "--eval_model", checkpoint,
                                "--eval_set", "val"])
    bench_amp = "bf16" if device.type == "cuda" else "off"
    spec = ["--model", sizes.model, "--device", args.device, "--imsize", str(sizes.imsize)]
    for batch in sizes.bench_batches:
        runner.run(f"benchmark_model_b{batch}", ["benchmarks/benchmark_model.py", *spec, "--batch_size", str(batch),
                                                 "--steps", str(sizes.bench_steps), "--warmup", str(sizes.bench_warmup),
                                                 "--amp", bench_amp])
    runner.run("benchmark_e2e", ["benchmarks/benchmark_e2e.py", *spec, "--batch_size",
                                 str(sizes.bench_batches[-1]), "--steps", str(sizes.bench_steps),
                                 "--epochs", "1", "--warmup_epochs", str(min(sizes.bench_warmup, 1)),
                                 "--num_workers", str(sizes.num_workers),
                                 "--image_size", str(sizes.image_size), "--amp", bench_amp])
    if args.compile:
        train(compiled=True)
    return summarize(runner, args, sizes, gpus, world_s)


def summarize(runner: Runner, args: argparse.Namespace, sizes: Sizes, gpus: int, world_s: float
              ) -> Dict[str, Any]:
    """The JSON summary: every check's status, and the throughput figures against the per-GPU goals."""
    checks = runner.checks
    e2e = checks.get("benchmark_e2e", {}).get("result") or {}
    evaluated = checks.get("eval_bf16", {}).get("result") or {}
    measured = {"train_samples_per_s_per_gpu": e2e.get("train_samples_per_s"),
                "inference_samples_per_s_per_gpu": evaluated.get("eval_samples_per_s")}
    return {
        "ok": all(c["ok"] for c in checks.values()),
        "failed": [name for name, c in checks.items() if not c["ok"]],
        "device": args.device, "gpus": gpus, "tiny": args.tiny, "model": sizes.model, "imsize": sizes.imsize,
        "device_name": torch.cuda.get_device_name(0) if gpus else None, "torch": torch.__version__,
        "seconds": round(time.perf_counter() - runner.start + world_s, 1), "world_s": round(world_s, 1),
        "goals": {k: {"goal": GOALS[k], "measured": v} for k, v in measured.items()},
        "checks": checks,
    }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run every check for ``argv`` (like ``sys.argv[1:]``), print and return the JSON summary."""
    args = build_parser().parse_args(argv)
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        return emit(run_checks(args, args.work_dir))
    with tempfile.TemporaryDirectory(prefix="clipvg-gpu-check-") as work_dir:
        return emit(run_checks(args, work_dir))


if __name__ == "__main__":
    main()
