"""Training and evaluation loops: ``train_one_epoch`` and ``evaluate``."""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.loss import grounding_loss
from utils.box_ops import cxcywh_to_xyxy, elementwise_iou
from utils.errors import InputError, RunFailed, UsageError
from utils.misc import all_gather_object, all_reduce_sum, get_world_size, is_main_process
from utils.predictions import ACCURACY_IOU


class NonFiniteLossError(RunFailed):
    """Training produced a NaN/inf loss on some rank; every rank raises it with the same message, naming the step,
    the ranks and their samples, and the last good checkpoint."""


class SlowBF16Warning(UserWarning):
    """``--amp bf16`` on a CPU without bf16 matmul units: it runs, but slower than fp32."""


def resolve_amp(device: torch.device, amp: Optional[str]) -> str:
    """``--amp`` for ``device``: ``auto`` (or None) is ``bf16`` on CUDA and ``off`` (fp32) on the CPU; ``fp16``
    needs CUDA."""
    if amp in (None, "auto"):
        return "bf16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        raise UsageError(f"--amp fp16: needs a CUDA device (on the {device.type}, use --amp bf16 or off)")
    return amp


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls in hardware (AMX tiles or AVX512-BF16), where ``--amp bf16`` pays."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def autocast(device: torch.device, amp: Optional[str]) -> contextlib.AbstractContextManager:
    """Mixed precision per ``--amp`` (``resolve_amp``): bf16 or fp16 autocast on CUDA, bf16 autocast on the CPU,
    nothing for ``off``. On a CPU without AMX or AVX512-BF16, bf16 warns once (it runs slower than fp32 there)."""
    amp = resolve_amp(device, amp)
    if amp == "off":
        return contextlib.nullcontext()
    if device.type == "cpu":
        if not cpu_has_fast_bf16():
            warnings.warn("--amp bf16: this CPU has neither AMX nor AVX512-BF16, so bf16 runs slower than fp32 here "
                          "(--amp off is faster)", SlowBF16Warning, stacklevel=2)
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclass
class TrainStats:
    loss: float
    l1: float
    giou: float
    lr: float
    steps: int
    samples: int
    seconds: float

    def as_dict(self, prefix: str = "train_") -> Dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}l1": self.l1, f"{prefix}giou": self.giou, "lr": self.lr,
                f"{prefix}steps": self.steps, f"{prefix}samples_per_s": self.samples / max(self.seconds, 1e-9)}


def steps_in_epoch(epoch: int, steps_per_epoch: int, max_steps: Optional[int]) -> Optional[int]:
    """Optimizer steps of ``epoch`` in a run capped at ``max_steps`` in total (None: the whole epoch)."""
    if max_steps is None:
        return None
    return max(0, min(steps_per_epoch, max_steps - epoch * steps_per_epoch))


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, *, amp: str = "off", max_norm: float = 0.0,
                    scaler: Optional[torch.amp.GradScaler] = None, writer: Any = None, global_step: int = 0,
                    check_every: int = 10, last_checkpoint: str = "", world_size: int = 1,
                    max_steps: Optional[int] = None, step_scheduler: Any = None) -> TrainStats:
    """One pass over ``loader`` (its first ``max_steps`` batches with a value); ``step_scheduler`` (an LR scheduler
    advanced per optimizer step) steps after every update. Loss terms stay on the device; they are read back (and
    checked for NaN/inf) every ``check_every`` steps, so there is no host sync per step. The check is taken by all
    ranks together: a non-finite loss on any rank raises ``NonFiniteLossError`` on every rank, with one message
    naming the step, the ranks and their samples' indices, and the last good checkpoint. The returned loss terms
    are the means over all steps of all ranks (as the official code logs them)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    window: List[tuple[int, torch.Tensor, torch.Tensor]] = []
    n_steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    start = time.perf_counter()
    samples = 0
    bar = tqdm(total=n_steps, desc=f"epoch {epoch}", disable=not is_main_process(), dynamic_ncols=True,
               leave=False)

    def check_window() -> None:
        bad_here = torch.zeros(1, device=device)
        if window:
            bad_here += (~torch.isfinite(torch.stack([w[1] for w in window]))).sum()
        if float(all_reduce_sum(bad_here)) == 0:
            window.clear()
            return
        first_bad = [(step, idx.tolist()) for step, loss, idx in window if not torch.isfinite(loss)][:1]
        per_rank = all_gather_object(first_bad)
        step = min(found[0][0] for found in per_rank if found)
        samples = [(rank, found[0][1]) for rank, found in enumerate(per_rank) if found and found[0][0] == step]
        where = "; ".join(f"rank {rank}: {idx}" for rank, idx in samples) if len(per_rank) > 1 else samples[0][1]
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step}; batch sample indices: {where}; "
            f"last good checkpoint: {last_checkpoint or 'none written yet'}")

    for step, batch in enumerate(loader):
        if step == n_steps:
            break
        batch = _to_device(batch, device)
        with autocast(device, amp):
            pred = model(batch["img"], batch["img_mask"], batch["text"])
        terms = grounding_loss(pred.float(), batch["box"])
        loss = terms["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
        detached = torch.stack([terms["loss"].detach(), terms["l1"].detach(), terms["giou"].detach()])
        sums += detached.double()
        window.append((step, detached[0], batch["index"].detach().cpu()))
        samples += batch["img"].shape[0] * world_size
        if len(window) >= check_every or step == n_steps - 1:
            check_window()
            if is_main_process():
                mean = (sums / (step + 1)).tolist()
                bar.set_postfix(loss=f"{mean[0]:.4f}", l1=f"{mean[1]:.4f}", giou=f"{mean[2]:.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss_step", float(detached[0]), global_step + step)
        bar.update(1)
    bar.close()
    check_window()
    means = (all_reduce_sum(sums) / max(n_steps * get_world_size(), 1)).tolist()
    return TrainStats(loss=means[0], l1=means[1], giou=means[2], lr=optimizer.param_groups[0]["lr"],
                      steps=n_steps, samples=samples, seconds=time.perf_counter() - start)


@dataclass
class EvalResult:
    """Per-sample outputs of a split, every sample exactly once, in split order."""
    indices: torch.Tensor        # (N,) position of each sample in the split file
    pred_boxes: torch.Tensor     # (N, 4) predicted (cx, cy, w, h) normalised to the padded input
    target_boxes: torch.Tensor   # (N, 4) target (cx, cy, w, h) normalised to the padded input
    transforms: torch.Tensor     # (N, 4) [scale, pad_x, pad_y, 0] of the eval transform
    iou: torch.Tensor            # (N,) IoU of the clamped prediction with the target
    seconds: float = 0.0         # wall time of the prediction loop and the gather

    @property
    def samples_per_s(self) -> float:
        return len(self.iou) / self.seconds if self.seconds > 0 else 0.0

    @property
    def accuracy(self) -> float:
        return float((self.iou >= ACCURACY_IOU).double().mean()) if len(self.iou) else 0.0

    @property
    def mean_iou(self) -> float:
        return float(self.iou.double().mean()) if len(self.iou) else 0.0


def require_samples(dataset: Any, what: str) -> None:
    """``InputError`` when ``dataset`` (a split to evaluate) holds no sample: an accuracy over nothing would read
    0.0 as if the model had missed everything."""
    if len(dataset) == 0:
        raise InputError(f"{what}: no samples to evaluate")


def accuracy_iou(pred_cxcywh: torch.Tensor, target_cxcywh: torch.Tensor) -> torch.Tensor:
    """The official metric's IoU: prediction to xyxy clamped to [0, 1], against the target box."""
    pred = cxcywh_to_xyxy(pred_cxcywh.float()).clamp(0, 1)
    return elementwise_iou(pred, cxcywh_to_xyxy(target_cxcywh.float()))


def _batches(loader: DataLoader, desc: str) -> Iterator[Dict[str, Any]]:
    yield from tqdm(loader, desc=desc, disable=not is_main_process(), dynamic_ncols=True, leave=False)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: str = "off",
             desc: str = "eval") -> EvalResult:
    """Predict every sample of ``loader``'s split on every process, gather the outputs with their sample
    indices, drop the distributed sampler's padding (repeated indices) and sort into split order. Every rank
    gets the same result, equal to a single-process run."""
    model.eval()
    start = time.perf_counter()
    parts: Dict[str, List[torch.Tensor]] = {"indices": [], "pred_boxes": [], "target_boxes": [], "transforms": []}
    for batch in _batches(loader, desc):
        batch = _to_device(batch, device)
        with autocast(device, amp):
            pred = model(batch["img"], batch["img_mask"], batch["text"])
        parts["indices"].append(batch["index"].cpu())
        parts["pred_boxes"].append(pred.float().cpu())
        parts["target_boxes"].append(batch["box"].float().cpu())
        parts["transforms"].append(batch["transform"].float().cpu())
    local = {k: torch.cat(v) if v else torch.zeros((0,) if k == "indices" else (0, 4)) for k, v in parts.items()}
    gathered = all_gather_object(local)
    merged = {k: torch.cat([g[k] for g in gathered]) for k in local}
    order = torch.argsort(merged["indices"], stable=True)
    merged = {k: v[order] for k, v in merged.items()}
    keep = torch.ones(len(order), dtype=torch.bool)
    if len(order) > 1:
        keep[1:] = merged["indices"][1:] != merged["indices"][:-1]
    merged = {k: v[keep] for k, v in merged.items()}
    iou = accuracy_iou(merged["pred_boxes"], merged["target_boxes"])
    return EvalResult(indices=merged["indices"].long(), pred_boxes=merged["pred_boxes"],
                      target_boxes=merged["target_boxes"], transforms=merged["transforms"], iou=iou,
                      seconds=time.perf_counter() - start)


def prediction_rows(result: EvalResult, dataset: Any, imsize: int) -> List[Dict[str, Any]]:
    """JSON-lines rows ``{index, image, query, target_xyxy, pred_xyxy, iou}`` with boxes in original pixels."""
    from datasets.transforms import canvas_to_original

    pred_canvas = cxcywh_to_xyxy(result.pred_boxes).clamp(0, 1) * imsize
    pred_pixels = canvas_to_original(pred_canvas, result.transforms)
    rows = []
    for i, index in enumerate(result.indices.tolist()):
        record = dataset.records_by_index[index]
        rows.append({
            "index": index,
            "image": record.image,
            "query": record.query,
            "target_xyxy": [round(float(v), 3) for v in record.box_xyxy],
            "pred_xyxy": [round(float(v), 3) for v in pred_pixels[i].tolist()],
            "iou": round(float(result.iou[i]), 6),
        })
    return rows


def learning_rate_lambda(args: Any, total_steps: Optional[int] = None):
    """The per-epoch multiplier of the official schedules (``step`` is handled by StepLR); with ``args.lr_per_step``
    a function of the optimizer step instead, the same curve over ``total_steps`` steps (fractional epochs)."""
    per_epoch = _epoch_multiplier(args)
    if not getattr(args, "lr_per_step", False):
        return per_epoch
    if not total_steps:
        raise ValueError("--lr_per_step needs the run's number of optimizer steps")
    return lambda step: per_epoch(step * args.epochs / total_steps)


def _epoch_multiplier(args: Any):
    if args.lr_scheduler == "poly":
        return lambda epoch: (1 - epoch / args.epochs) ** args.lr_power
    if args.lr_scheduler == "halfdecay":
        return lambda epoch: 0.5 ** (epoch // max(args.epochs // 10, 1))
    if args.lr_scheduler == "cosine":
        return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs))
    if args.lr_scheduler == "exponential":
        return lambda epoch: args.lr_exponential ** epoch
    raise ValueError(f"--lr_scheduler {args.lr_scheduler}: no multiplier (step uses StepLR)")
