"""Distributed and process helpers.

Every helper here is a no-op (or the single-process answer) when no process group is initialised, so one code
path serves a plain ``python script.py`` run, ``torchrun``, ``torch.distributed.launch`` (with or without
``--use_env``) and SLURM.
"""
from __future__ import annotations

import argparse
import builtins
import datetime
import os
import random
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist


def is_dist_avail_and_initialized() -> bool:
    """True when a ``torch.distributed`` process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Gather a picklable object from every rank; returns ``[obj]`` without a process group."""
    if not is_dist_avail_and_initialized():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank."""
    if not is_dist_avail_and_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity without a process group)."""
    if is_dist_avail_and_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


_BUILTIN_PRINT = builtins.print


def _silence_non_main(is_main: bool) -> None:
    """Route ``print`` on non-zero ranks to nowhere unless ``force=True`` is passed."""

    def _print(*args: Any, **kwargs: Any) -> None:
        if kwargs.pop("force", False) or is_main:
            _BUILTIN_PRINT(*args, **kwargs)

    builtins.print = _print


def _launcher_environment(args: argparse.Namespace) -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from the launcher's environment, or None for a single process.

    Recognises torchrun and ``torch.distributed.launch --use_env`` (RANK/WORLD_SIZE/LOCAL_RANK), the legacy
    ``torch.distributed.launch`` form (``--local_rank``/``--local-rank`` argument plus RANK/WORLD_SIZE), and
    SLURM (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, with MASTER_ADDR/MASTER_PORT set by the job script).
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", getattr(args, "local_rank", -1)))
        if local < 0:
            local = rank % max(torch.cuda.device_count(), 1)
        return rank, world, local
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", rank % max(torch.cuda.device_count(), 1)))
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise RuntimeError(
                f"SLURM job with {world} tasks but {', '.join(missing)} not set: export MASTER_ADDR (the first "
                "node's host name) and MASTER_PORT in the job script before srun")
        return rank, world, local
    return None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_device(requested: str | None) -> torch.device:
    """``cuda`` when available and nothing was asked for; a clear error when CUDA is asked for but missing."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
    return device


def init_distributed_mode(args: argparse.Namespace) -> None:
    """Set up the process group if a launcher started us, and the device.

    Sets ``args.distributed``, ``args.rank``, ``args.world_size``, ``args.local_rank`` and ``args.device`` (a
    ``torch.device``). Without a launcher this is a single process on ``--device`` (default: CUDA if present).
    The backend is NCCL on CUDA and gloo on the CPU. Non-zero ranks stay quiet.
    """
    base = resolve_device(getattr(args, "device", None))
    found = _launcher_environment(args)
    if found is None or found[1] == 1:
        args.distributed, args.rank, args.world_size, args.local_rank = False, 0, 1, 0
        args.device = base
        _silence_non_main(True)
        return
    rank, world, local = found
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    if base.type == "cuda":
        local = local % torch.cuda.device_count()  # a task bound to its own GPU(s) sees them from index 0
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    init_method = getattr(args, "dist_url", None) or "env://"
    dist.init_process_group(backend=backend, init_method=init_method, world_size=world, rank=rank,
                            timeout=datetime.timedelta(minutes=60))
    args.distributed, args.rank, args.world_size, args.local_rank, args.device = True, rank, world, local, device
    _silence_non_main(rank == 0)
    print(f"| distributed init: rank {rank}/{world}, local rank {local}, backend {backend}, {init_method}",
          flush=True)


def set_deterministic(enabled: bool) -> None:
    """``--deterministic``: deterministic algorithms everywhere (an op without one raises), no cuDNN autotuning,
    no TF32; off: cuDNN autotuning and TF32 matmuls on CUDA (the fast default)."""
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cuda.matmul.allow_tf32 = not enabled
    torch.backends.cudnn.allow_tf32 = not enabled
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def cleanup_distributed() -> None:
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (callers add the rank for per-rank streams)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
