"""Run plumbing shared by the entry scripts: output folder checks, checkpoint paths, log.txt, TensorBoard."""
from __future__ import annotations

import argparse
import json
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from utils.args import parse_args
from utils.checkpoint import checkpoint_clip_state_dict
from utils.errors import InputError, UsageError
from utils.io import check_writable_dir
from utils.misc import (broadcast_object, cleanup_distributed, init_distributed_mode, is_main_process,
                        settle_rank_failure)
from utils.prompt import PROMPT_PLACEHOLDER


def prepare_output_dir(path: str) -> str:
    """Create ``path`` and prove it is writable (on rank 0), before any work is done.

    Raises ``UsageError`` for an empty path and ``InputError`` naming the folder when it cannot be created or
    written."""
    if not path:
        raise UsageError("--output_dir is empty: give a folder for checkpoints and logs")
    error = None
    if is_main_process():
        try:
            check_writable_dir(path, "--output_dir")
        except InputError as exc:
            error = str(exc)
    error = broadcast_object(error)
    if error:
        raise InputError(error)
    return os.path.abspath(path)


def resolve_checkpoint_path(value: str, output_dir: str, flag: str) -> str:
    """'' -> ''; 'auto' -> ``output_dir/checkpoint.pth`` when it exists, else '' (fresh start);
    a path -> itself, or ``InputError`` naming the flag when it is a folder or does not exist."""
    if not value:
        return ""
    if value == "auto":
        latest = os.path.join(output_dir, "checkpoint.pth")
        if os.path.isfile(latest):
            return latest
        print(f"| {flag} auto: no checkpoint.pth in {output_dir} yet, starting from scratch")
        return ""
    if os.path.isdir(value):
        raise InputError(f"{flag} {value}: is a directory, not a checkpoint file")
    if not os.path.isfile(value):
        raise InputError(f"{flag} {value}: no such checkpoint file")
    return value


# Settings that shape the model or its inputs: evaluation, inference and training from a checkpoint (--resume,
# --retrain) take them from the checkpoint unless the command line gives them.
CHECKPOINT_SETTINGS = ("imsize", "max_query_len", "prompt", "tapped_layers", "vl_dropout", "vl_nheads",
                       "vl_hidden_dim", "vl_dim_feedforward", "vl_enc_layers")


def _setting_value(name: str, value: Any) -> Any:
    """A setting in comparable form: the prompts '', None and '{pseudo_query}' all mean the query alone."""
    if name == "prompt" and value in (None, "", PROMPT_PLACEHOLDER):
        return ""
    return value


def checkpoint_args(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments a checkpoint was trained with, as a dict (ours and official ones store a Namespace; {} if none)."""
    stored = ckpt.get("args")
    return vars(stored) if isinstance(stored, argparse.Namespace) else (stored or {})


def _warn_ignored_model(args: argparse.Namespace, ckpt: Dict[str, Any], where: str) -> None:
    """A given ``--model`` that differs from the CLIP a checkpoint records is not what the model is built with:
    one warning naming both."""
    given = getattr(args, "model", None)
    if "model" not in getattr(args, "given_flags", ()) or not given:
        return
    spec = (ckpt.get("clip_source") or {}).get("spec")
    if checkpoint_clip_state_dict(ckpt) is not None:
        recorded = f"the CLIP tensors stored in it{f' ({spec})' if spec else ''}"
    elif spec and spec != given:
        recorded = f"{spec}, recorded in it (--model is used only when those weights cannot be found)"
    else:
        return
    warnings.warn(f"--model {given} is ignored: {where} carries its own CLIP, {recorded}", stacklevel=3)


def adopt_checkpoint_settings(args: argparse.Namespace, ckpt: Dict[str, Any]) -> List[str]:
    """Copy the model-shaping settings stored in ``ckpt['args']`` into ``args`` where the command line did not
    give them (so a model trained at ``--imsize 96`` evaluates at 96 without repeating the flag); a given flag that
    disagrees with the checkpoint is kept, with a warning naming both values; so is a given ``--model`` that the
    checkpoint's own CLIP overrides. Returns the names adopted."""
    stored = checkpoint_args(ckpt)
    given = set(getattr(args, "given_flags", ()))
    where = ckpt.get("checkpoint_path", "the checkpoint")
    adopted = []
    for name in CHECKPOINT_SETTINGS:
        if name not in stored or _setting_value(name, getattr(args, name, None)) == _setting_value(name, stored[name]):
            continue
        if name in given:
            warnings.warn(f"--{name} {getattr(args, name)!r} differs from the {stored[name]!r} that {where} was "
                          f"trained with; using the given --{name}", stacklevel=2)
        else:
            setattr(args, name, stored[name])
            adopted.append(name)
    _warn_ignored_model(args, ckpt, where)
    if adopted:
        print("| from the checkpoint: " + ", ".join(f"--{n} {getattr(args, n)!r}" for n in adopted))
    return adopted


def append_log_line(path: str, line: str, truncate: bool = False) -> None:
    """Append one line to ``log.txt`` (a fresh run truncates it first) and flush it to disk."""
    with open(path, "w" if truncate else "a") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def logged_epochs(path: str) -> List[Dict[str, Any]]:
    """The per-epoch JSON lines of a ``log.txt`` (``append_log_line``'s; the arguments line and any torn line are
    skipped); [] without a file."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "epoch" in row:
                rows.append(row)
    return rows


class SummaryWriterOnMain:
    """TensorBoard under ``output_dir/tensorboard`` on rank 0; every method is a no-op on other ranks."""

    def __init__(self, output_dir: str) -> None:
        self.writer = None
        if is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def add_histogram(self, tag: str, values: Any, step: int, bins: Any = "tensorflow") -> None:
        if self.writer is not None:
            self.writer.add_histogram(tag, values, step, bins=bins)

    def epoch_scalars(self, epoch: int, stats: Dict[str, Any], val_iou: Optional[torch.Tensor],
                      model: Optional[torch.nn.Module] = None) -> None:
        """Per-epoch scalars (each loss term, lr, val accuracy/mIoU, throughput), the val IoU distribution and
        histograms of the trainable weights."""
        if self.writer is None:
            return
        for key, value in stats.items():
            if isinstance(value, (int, float)) and key != "epoch":
                group = "val" if key.startswith("val_") or key.startswith("best_val") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, epoch)
        if val_iou is not None and len(val_iou):
            self.writer.add_histogram("val/iou", val_iou, epoch)
        if model is not None:
            for name, param in model.named_parameters():
                if param.requires_grad:
                    self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_distributed(script: str, run: Callable[[argparse.Namespace], Any], argv: Optional[Sequence[str]]) -> Any:
    """The body of an entry script's ``main(argv)``: parse ``argv`` with ``script``'s defaults, join the process
    group the launcher describes (none without a launcher), ``run(args)``, and always leave the group. A rank that
    fails tells the others first (``settle_rank_failure``), so the launcher blames the rank that failed first."""
    args = parse_args(script, argv)
    init_distributed_mode(args)
    try:
        return run(args)
    except Exception as exc:
        settle_rank_failure(exc)
        raise
    finally:
        cleanup_distributed()
