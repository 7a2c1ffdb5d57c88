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
import sys
import threading
import time
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist

from utils.errors import RunFailed, UsageError


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

RENDEZVOUS_TIMEOUT_ENV = "CLIPVG_RENDEZVOUS_TIMEOUT"
COLLECTIVE_TIMEOUT_ENV = "CLIPVG_COLLECTIVE_TIMEOUT"
TIMEOUT_DEFAULTS = {RENDEZVOUS_TIMEOUT_ENV: 300, COLLECTIVE_TIMEOUT_ENV: 1800}
"""Seconds a rank waits for the others to join (rendezvous) and in any later collective (a barrier, a gather,
an all-reduce) before it gives up; each can be set through its environment variable."""

PEER_FAILURE_GRACE_S = 5.0
"""How long a rank that fails because another rank failed first waits for the launcher to stop it, so that the
launcher (torchrun) reports the first failure as the root cause."""


def _print_stdout_on_main_only(*args: Any, **kwargs: Any) -> None:
    """``print`` on ranks other than 0: output to stdout is dropped unless ``force=True`` is passed; anything
    written elsewhere (stderr: warnings, errors) goes through."""
    force = kwargs.pop("force", False)
    if force or kwargs.get("file") not in (None, sys.stdout):
        _BUILTIN_PRINT(*args, **kwargs)


def launched_rank() -> tuple[int, int] | None:
    """(rank, world size) of this process as its launcher describes it (torchrun's RANK/WORLD_SIZE, or an srun
    step's SLURM_PROCID/SLURM_NTASKS), or None for a single process. Readable before and after the process group
    exists, e.g. to prefix a rank's last words."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    elif "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env.get("SLURM_NTASKS", "1"))
    else:
        return None
    return (rank, world) if world > 1 else None


def rank_prefix() -> str:
    """``'[rankN]: '`` in a run of several processes (the prefix torch puts on a rank's traceback), else ''."""
    found = launched_rank()
    return f"[rank{found[0]}]: " if found else ""


def _launcher_environment(args: argparse.Namespace) -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from the launcher's environment (``launched_rank`` and the local rank), or
    None for a single process.

    Recognises torchrun and ``torch.distributed.launch --use_env`` (RANK/WORLD_SIZE/LOCAL_RANK), the legacy
    ``torch.distributed.launch`` form (``--local_rank``/``--local-rank`` argument plus RANK/WORLD_SIZE), and
    an srun step (SLURM_STEP_ID set; SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, with MASTER_ADDR/MASTER_PORT set by
    the job script). A plain command in a batch script or an salloc shell (no SLURM_STEP_ID) is one process.
    """
    env = os.environ
    torchrun = "RANK" in env and "WORLD_SIZE" in env
    if not torchrun and "SLURM_STEP_ID" not in env and int(env.get("SLURM_NTASKS", "1")) > 1 \
            and "SLURM_PROCID" in env:
        print(f"| SLURM job {env.get('SLURM_JOB_ID', '?')} with {env['SLURM_NTASKS']} tasks, but this command "
              "is not an srun step: running as one process (start the ranks with srun)", file=sys.stderr)
        return None
    found = launched_rank()
    if found is None:
        return None
    rank, world = found
    if torchrun:
        local = int(env.get("LOCAL_RANK", getattr(args, "local_rank", -1)))
        return rank, world, local if local >= 0 else rank % max(torch.cuda.device_count(), 1)
    local = int(env.get("SLURM_LOCALID", rank % max(torch.cuda.device_count(), 1)))
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise UsageError(
            f"SLURM job with {world} tasks but {', '.join(missing)} not set: export MASTER_ADDR (the first "
            "node's host name) and MASTER_PORT in the job script before srun")
    return rank, world, local


def distributed_timeout(name: str) -> datetime.timedelta:
    """The rendezvous or collective timeout (``RENDEZVOUS_TIMEOUT_ENV`` / ``COLLECTIVE_TIMEOUT_ENV``): the
    environment variable's seconds, else the default; ``UsageError`` naming the variable when it is not a
    positive number."""
    text = os.environ.get(name, "")
    if not text:
        return datetime.timedelta(seconds=TIMEOUT_DEFAULTS[name])
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"{name}={text!r}: expected a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def _rendezvous(init_method: str, rank: int, world: int) -> dist.Store:
    """Meet the other ranks through ``init_method`` and return the shared store. The wait runs in a helper thread
    so that Ctrl-C stops it (a blocking wait in C++ does not see signals), and it gives up after the rendezvous
    timeout with ``RunFailed`` saying where and for what it waited."""
    timeout = distributed_timeout(RENDEZVOUS_TIMEOUT_ENV)
    outcome: dict[str, Any] = {}

    def meet() -> None:
        try:
            outcome["store"] = next(dist.rendezvous(init_method, rank, world, timeout=timeout))[0]
        except Exception as exc:  # reported by the main thread below
            outcome["error"] = exc

    helper = threading.Thread(target=meet, name="rendezvous", daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(0.2)
    if "error" in outcome:
        where = init_method
        if init_method == "env://":
            where = f"MASTER_ADDR:MASTER_PORT {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        cause = (str(outcome["error"]).strip().splitlines() or [type(outcome["error"]).__name__])[0]
        raise RunFailed(
            f"rank {rank} of {world}: no rendezvous with the other ranks at {where} within "
            f"{timeout.total_seconds():g} s ({RENDEZVOUS_TIMEOUT_ENV}): {cause}. Start every rank (torchrun, or "
            "srun in a SLURM job) with the same MASTER_ADDR/MASTER_PORT") from None
    return outcome["store"]


def settle_rank_failure(exc: BaseException) -> None:
    """Called on a rank whose run raised ``exc`` in a distributed run, before it leaves the process group. The
    first rank to fail marks the shared store and returns at once; a rank that fails after another one (a
    collective that lost its peer, the same non-finite loss) says which rank failed first and waits up to
    ``PEER_FAILURE_GRACE_S`` for the launcher to stop it, so that the launcher names the first one as the root
    cause. A signal (Ctrl-C, the launcher's SIGTERM) is no failure of this rank."""
    if not isinstance(exc, Exception) or not is_dist_avail_and_initialized():
        return
    store = dist.distributed_c10d._get_default_store()
    store.set_timeout(datetime.timedelta(seconds=PEER_FAILURE_GRACE_S))
    lines = str(exc).strip().splitlines()
    summary = f"rank {get_rank()} failed first: {type(exc).__name__}{': ' + lines[0] if lines else ''}"
    try:
        if store.add("clipvg/failed_ranks", 1) == 1:
            store.set("clipvg/first_failure", summary)
            return
        first = store.get("clipvg/first_failure").decode()
    except Exception:  # the store went away with the rank that hosted it (rank 0 failed first)
        first = "another rank failed first (the rendezvous store went away with it)"
    print(f"{rank_prefix()}stopping: {first}", file=sys.stderr, flush=True)
    time.sleep(PEER_FAILURE_GRACE_S)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_device(requested: str | None) -> torch.device:
    """``cuda`` when available and nothing was asked for; a clear error when CUDA is asked for but missing."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
    return device


def init_distributed_mode(args: argparse.Namespace) -> None:
    """Set up the process group if a launcher started us, and the device.

    Sets ``args.distributed``, ``args.rank``, ``args.world_size``, ``args.local_rank`` and ``args.device`` (a
    ``torch.device``). Without a launcher this is a single process on ``--device`` (default: CUDA if present).
    The backend is NCCL on CUDA and gloo on the CPU. The rendezvous and every later collective wait have bounded
    timeouts (``distributed_timeout``). Ranks other than 0 print nothing to stdout until ``cleanup_distributed``.
    """
    base = resolve_device(getattr(args, "device", None))
    found = _launcher_environment(args)
    if found is None:
        args.distributed, args.rank, args.world_size, args.local_rank = False, 0, 1, 0
        args.device = base
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
    store = _rendezvous(init_method, rank, world)
    collective_timeout = distributed_timeout(COLLECTIVE_TIMEOUT_ENV)
    store.set_timeout(collective_timeout)
    dist.init_process_group(backend=backend, store=store, world_size=world, rank=rank, timeout=collective_timeout)
    args.distributed, args.rank, args.world_size, args.local_rank, args.device = True, rank, world, local, device
    if rank != 0:
        builtins.print = _print_stdout_on_main_only
    print(f"| distributed init: rank {rank}/{world}, local rank {local}, backend {backend}, {init_method}, "
          f"collective timeout {collective_timeout.total_seconds():g} s", flush=True)


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
    """Leave the process group (if any) and give ``print`` back its stdout on every rank."""
    builtins.print = _BUILTIN_PRINT
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (callers add the rank for per-rank streams)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
