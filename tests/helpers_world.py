"""A tiny synthetic referring world and tiny CLIP-VG checkpoints for end-to-end tests (shared; keep signatures stable).

- ``make_world(root, n_train_pseudo, n_val)``: a 64 px synthetic world under ``root`` whose ``train_pseudo`` split is
  the first ``n_train_pseudo`` train samples and whose ``val`` split has ``n_val`` samples, plus an OpenAI-format
  tiny CLIP file; returns ``{"data", "splits", "clip", "root"}``.
- ``common_args(world, output_dir, *extra)``: the flags every run on that world needs (CPU, no workers, no dropout).
- ``random_checkpoint(world, path)``: an untrained model-only checkpoint of the tiny model (``imsize`` 64 in its
  args), written without training; ``world_with_checkpoint(root, ...)``: a world with one (key ``ckpt``).
- ``free_port()``, ``torchrun(script, argv, nproc)``: launching an entry script on ``nproc`` CPU processes (gloo);
  ``default_sigint``: the ``preexec_fn`` of a child a test sends Ctrl-C.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Dict, List

import torch

from demo.synthetic import SyntheticConfig, generate
from helpers_clip import TINY_IMSIZE, tiny_args, write_tiny_clip_file
from models import build_model
from utils.checkpoint import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_world(root: str, n_train_pseudo: int = 8, n_val: int = 7, n_train_images: int = 6) -> Dict[str, str]:
    """Write the world (see the module docstring); the generator makes 3 expressions per train image."""
    data, splits = os.path.join(root, "data"), os.path.join(root, "splits")
    generate(data, splits, SyntheticConfig(n_train_images=n_train_images, n_val_images=4, n_testA_images=2,
                                           n_testB_images=2, n_pretrain=4, image_size=TINY_IMSIZE))
    folder = os.path.join(splits, "synthetic")
    train = torch.load(os.path.join(folder, "synthetic_train.pth"), weights_only=True)
    val = torch.load(os.path.join(folder, "synthetic_val.pth"), weights_only=True)
    if len(train) < n_train_pseudo or len(val) < n_val:
        raise ValueError(f"synthetic world too small: {len(train)} train / {len(val)} val samples")
    torch.save(train[:n_train_pseudo], os.path.join(folder, "synthetic_train_pseudo.pth"))
    torch.save(val[:n_val], os.path.join(folder, "synthetic_val.pth"))
    clip_file = os.path.join(root, "tiny_clip.pt")
    write_tiny_clip_file(clip_file, torchscript=False)
    return {"data": data, "splits": splits, "clip": clip_file, "root": root}


def common_args(world: Dict[str, str], output_dir: str, *extra: str) -> List[str]:
    """Flags of a CPU run of any entry script on ``world``."""
    return ["--model", world["clip"], "--imsize", str(TINY_IMSIZE), "--dataset", "synthetic",
            "--data_root", world["data"], "--split_root", world["splits"], "--output_dir", str(output_dir),
            "--device", "cpu", "--num_workers", "0", "--vl_dropout", "0", "--lr", "1e-3", *extra]


def random_checkpoint(world: Dict[str, str], path: str, seed: int = 0) -> str:
    """An untrained model-only checkpoint of the tiny model on ``world``'s CLIP file; returns ``path``."""
    args = tiny_args("--model", world["clip"], "--vl_dropout", "0")
    torch.manual_seed(seed)
    model = build_model(args)
    return save_checkpoint(path, model, None, None, 0, args, 0.0)


def world_with_checkpoint(root: str, n_train_pseudo: int = 8, n_val: int = 7, seed: int = 0) -> Dict[str, str]:
    """``make_world`` under ``root/world`` plus an untrained checkpoint of the tiny model at ``root/tiny.pth``
    (``random_checkpoint`` with ``seed``; its path under the key ``ckpt``)."""
    world = make_world(os.path.join(root, "world"), n_train_pseudo, n_val)
    world["ckpt"] = random_checkpoint(world, os.path.join(root, "tiny.pth"), seed=seed)
    return world


def default_sigint() -> None:
    """``preexec_fn`` of a child that a test interrupts: SIGINT back to its default disposition, as in a terminal.
    A job a shell starts in the background (``cmd &``) ignores SIGINT, children inherit that, and Python then
    installs no Ctrl-C handler, so the test would measure its launcher instead of the script."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    """A free local TCP port for the rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: str, argv: List[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """Run ``script`` under ``torch.distributed.run`` with ``nproc`` CPU processes; asserts it succeeds."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           os.path.join(ROOT, script), *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out
