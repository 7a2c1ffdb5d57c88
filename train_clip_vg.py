"""Train CLIP-VG (unsupervised on ``train_pseudo`` or fully supervised on ``train`` with ``--sup_type full``).

Runs as a plain process (``python train_clip_vg.py ...``) or under torchrun / torch.distributed.launch / SLURM.

A run is never lost: an ``--output_dir`` that holds one (``checkpoint.pth``, ``best_checkpoint.pth``,
``result.json``, or a ``log.txt`` with epoch lines) is refused before any work unless the run continues it
(``--resume auto``, or ``--resume`` of that folder's ``checkpoint.pth``) or ``--overwrite`` deletes it on purpose.
``--resume`` of a checkpoint that already holds ``--epochs`` epochs (or more) trains nothing: it says so in one line
and returns the run's existing ``result.json`` (exit status 0), so rerunning a finished command is harmless.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

import engine
from datasets import DataCache, build_dataset
from datasets.loader import build_loader
from models import build_model, build_model_from_checkpoint, count_parameters, describe_parameters
from utils.cli import run_cli
from utils.checkpoint import (convert_official_optimizer_state, convert_official_scheduler_state, load_checkpoint,
                              load_model_state, save_checkpoint)
from utils.errors import InputError, UsageError
from utils.io import remove_stale_temporaries, write_json
from utils.misc import (all_gather_object, barrier, broadcast_object, get_rank, is_main_process, seed_everything,
                        set_deterministic)
from utils.run_setup import (SummaryWriterOnMain, adopt_checkpoint_settings, append_log_line, checkpoint_args,
                             logged_epochs, prepare_output_dir, resolve_checkpoint_path, run_distributed)


def build_optimizer(params: List[torch.nn.Parameter], args: argparse.Namespace,
                    device: torch.device) -> torch.optim.Optimizer:
    """The official optimizers over one parameter group (fused AdamW/Adam on CUDA)."""
    fused = {"fused": True} if device.type == "cuda" else {}
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, **fused)
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay, **fused)
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, weight_decay=args.weight_decay, momentum=0.9)
    return torch.optim.RMSprop(params, lr=args.lr, weight_decay=args.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace,
                    total_steps: Optional[int] = None) -> torch.optim.lr_scheduler.LRScheduler:
    """The official per-epoch schedules: step (x0.1 every --lr_drop), poly, halfdecay, cosine, exponential; with
    ``--lr_per_step`` the multiplier schedules advance per optimizer step over ``total_steps``."""
    if args.lr_scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, engine.learning_rate_lambda(args, total_steps))


def scheduler_state_for(sched_state: Dict[str, Any], optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, where: str) -> Dict[str, Any]:
    """A checkpoint's LR-scheduler state made loadable into ``scheduler``: an official one (per-group lists of
    its 4 parameter groups) becomes the single-group equivalent. ``ValueError`` naming ``where`` when the state
    has another number of groups or belongs to the other kind of schedule (step vs. multiplier)."""
    groups = len(sched_state.get("base_lrs", []))
    if groups == 4 and len(optimizer.param_groups) == 1:
        sched_state = convert_official_scheduler_state(sched_state)
    elif groups != len(optimizer.param_groups):
        raise InputError(f"{where}: its lr_scheduler state has {groups} parameter groups, this optimizer "
                         f"{len(optimizer.param_groups)}")
    saved_step = "lr_lambdas" not in sched_state
    if saved_step != isinstance(scheduler, torch.optim.lr_scheduler.StepLR):
        saved = "the step schedule's" if saved_step else "a poly/halfdecay/cosine/exponential schedule's"
        raise InputError(f"{where}: its lr_scheduler state is {saved}, which this --lr_scheduler cannot continue; "
                         "resume with the checkpoint's --lr_scheduler, or start from it with --retrain")
    return sched_state


def _restore_training_state(ckpt: Dict[str, Any], optimizer: torch.optim.Optimizer,
                            scheduler: torch.optim.lr_scheduler.LRScheduler, args: argparse.Namespace) -> None:
    where = ckpt.get("checkpoint_path", "checkpoint")
    trained_per_step = bool(checkpoint_args(ckpt).get("lr_per_step", False))
    if trained_per_step != args.lr_per_step:
        raise UsageError(f"--resume {where}: it was trained with{'' if trained_per_step else 'out'} "
                         "--lr_per_step; resume with the same setting (or start from it with --retrain)")
    opt_state = ckpt.get("optimizer")
    if opt_state is None:
        print("| checkpoint holds no optimizer state: the optimizer starts fresh")
        return
    if len(opt_state.get("param_groups", [])) != len(optimizer.param_groups):
        opt_state = convert_official_optimizer_state(opt_state)
    optimizer.load_state_dict(opt_state)
    if ckpt.get("lr_scheduler") is not None:
        scheduler.load_state_dict(scheduler_state_for(ckpt["lr_scheduler"], optimizer, scheduler, where))


RUN_FILES = ("checkpoint.pth", "best_checkpoint.pth", "result.json", "log.txt")
"""The files of a run in its ``--output_dir`` (``tensorboard/`` besides); the first three are written atomically."""


def files_of_a_run(out_dir: str) -> List[str]:
    """The names of the run files ``out_dir`` holds (a ``log.txt`` counts once it has an epoch line)."""
    return [name for name in RUN_FILES
            if (logged_epochs(os.path.join(out_dir, name)) if name == "log.txt"
                else os.path.exists(os.path.join(out_dir, name)))]


def claim_output_dir(out_dir: str, asked: str, resume: str, overwrite: bool) -> None:
    """Refuse, before any work, to start a run in a folder that holds another one (rank 0 decides, every rank
    raises ``InputError``): only the folder's own run may go on there (``resume``, what ``--resume asked`` resolved
    to, is its ``checkpoint.pth``), or ``overwrite`` deletes the earlier run first. Also removes the temporary files
    that interrupted writes left in the folder."""
    error = None
    if is_main_process():
        for path in remove_stale_temporaries(out_dir, RUN_FILES):
            print(f"| removed {path}, left by an interrupted write")
        held = files_of_a_run(out_dir)
        continues_own_run = bool(resume) and os.path.abspath(resume) == os.path.join(out_dir, "checkpoint.pth")
        if held and overwrite:
            for name in held:
                os.remove(os.path.join(out_dir, name))
            shutil.rmtree(os.path.join(out_dir, "tensorboard"), ignore_errors=True)
            print(f"| --overwrite: deleted the earlier run in {out_dir} ({', '.join(held)}, tensorboard/)")
        elif held and not continues_own_run:
            how = ("it has no checkpoint.pth to continue from: start over with --overwrite instead of --resume auto"
                   if asked == "auto" else "continue it with --resume auto, start over with --overwrite")
            error = (f"--output_dir {out_dir} already holds a run ({', '.join(held)}): {how} (deletes it), or give "
                     "another --output_dir")
    error = broadcast_object(error)
    if error:
        raise InputError(error)


def finished_run_summary(out_dir: str, resume: str, trained: int, args: argparse.Namespace, best_accu: float,
                         best_epoch: int) -> Dict[str, Any]:
    """What ``--resume`` of a checkpoint that already holds ``--epochs`` epochs returns: the run's ``result.json``
    (written from ``log.txt`` when an interruption left it missing), after one line saying nothing was trained."""
    print(f"| --resume {resume}: the run has already trained {trained} epochs, --epochs is {args.epochs}: nothing "
          "to train (give a larger --epochs to train on)")
    path = os.path.join(out_dir, "result.json")
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    logged = logged_epochs(os.path.join(out_dir, "log.txt"))
    summary = {"best_val_accu": best_accu, "best_epoch": best_epoch, "epochs": args.epochs,
               "last_epoch_stats": logged[-1] if logged else {}, "output_dir": out_dir}
    if is_main_process():
        write_json(path, summary)
    return summary


def report_skipped_samples(dataset: Any, split: str) -> None:
    """One line (rank 0) with the training samples skipped so far at item time over every rank: their box lies
    outside their image."""
    skipped = sorted({i for part in all_gather_object(dataset.samples_outside_image()) for i in part})
    if skipped and is_main_process():
        print(f"| {split}: skipped {len(skipped)} sample(s) whose box lies outside its image (first: sample "
              f"{skipped[0]}; `python -m datasets.check` lists them)")


def run(args: argparse.Namespace, data_cache: Optional[DataCache] = None) -> Dict[str, Any]:
    """Train per ``args``; returns the summary that is also written to ``result.json``. ``data_cache``: the caller's
    ``DataCache`` when it runs several runs in one process (default: this run's own)."""
    device = args.device
    if args.overwrite and (args.resume or args.eval):
        raise UsageError("--overwrite starts a new run and --resume continues one: give only one of them")
    out_dir = prepare_output_dir(args.output_dir)
    resume = resolve_checkpoint_path(args.resume, out_dir, "--resume")
    retrain = resolve_checkpoint_path(args.retrain, out_dir, "--retrain")
    if args.eval and not resume:
        raise UsageError("--eval validates the --resume checkpoint: give --resume PATH")
    if args.overwrite and retrain and os.path.dirname(os.path.abspath(retrain)) == out_dir:
        raise UsageError(f"--overwrite would delete --retrain {args.retrain}, which lies in --output_dir {out_dir}: "
                         "copy it elsewhere first, or give another --output_dir")
    if not args.eval:
        claim_output_dir(out_dir, args.resume, resume, args.overwrite)

    ckpt = load_checkpoint(resume or retrain) if (resume or retrain) else None
    if ckpt is not None:
        adopt_checkpoint_settings(args, ckpt)
    train_split = "train" if args.sup_type == "full" else "train_pseudo"
    data_cache = data_cache if data_cache is not None else DataCache()
    dataset_train = None if args.eval else build_dataset(train_split, args, train=True, cache=data_cache)
    dataset_val = build_dataset("val", args, train=False, cache=data_cache)
    engine.require_samples(dataset_val, f"the val split of {args.dataset} (under --split_root {args.split_root})")

    set_deterministic(args.deterministic)
    seed_everything(args.seed + get_rank())
    model = build_model_from_checkpoint(ckpt, args) if ckpt is not None else build_model(args)
    if ckpt is not None:
        load_model_state(model, ckpt)
    model.to(device)
    n_trainable, n_total = count_parameters(model)
    print(describe_parameters(model))

    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)

    params = [p for p in model_without_ddp.parameters() if p.requires_grad]
    val_loader = build_loader(dataset_val, args, train=False)
    if args.eval:
        result = engine.evaluate(model, val_loader, device, args.amp, desc="val")
        print(f"| val accuracy {result.accuracy:.4f}, mean IoU {result.mean_iou:.4f}")
        return {"val_accu": result.accuracy, "val_miou": result.mean_iou}

    train_loader = build_loader(dataset_train, args, train=True)
    if len(train_loader) == 0:
        raise InputError(f"the training split has {len(dataset_train)} usable samples, fewer than one batch of "
                         f"--batch_size {args.batch_size} per process: lower --batch_size")
    if args.max_steps:
        epochs = -(-args.max_steps // len(train_loader))
        if epochs != args.epochs:
            print(f"| --max_steps {args.max_steps}: {epochs} epochs of {len(train_loader)} steps (--epochs "
                  f"{args.epochs} replaced)")
            args.epochs = epochs
    optimizer = build_optimizer(params, args, device)
    scheduler = build_scheduler(optimizer, args, args.max_steps or args.epochs * len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and args.amp == "fp16" else None

    start_epoch, best_accu, best_epoch = args.start_epoch, 0.0, -1
    if resume:
        _restore_training_state(ckpt, optimizer, scheduler, args)
        start_epoch = int(ckpt.get("epoch", -1)) + 1
        best_accu = float(ckpt.get("best_accu", ckpt.get("val_accu", 0.0)) or 0.0)
        best_epoch = int(ckpt.get("best_epoch", ckpt.get("epoch", -1)))
        if start_epoch >= args.epochs:
            return finished_run_summary(out_dir, resume, start_epoch, args, best_accu, best_epoch)
        print(f"| resumed from {resume}: continuing at epoch {start_epoch}, best val accuracy {best_accu:.4f}")
    del ckpt
    log_path = os.path.join(out_dir, "log.txt")
    if is_main_process() and start_epoch == 0:
        append_log_line(log_path, str(args), truncate=True)
    writer = SummaryWriterOnMain(out_dir)
    last_ckpt = os.path.join(out_dir, "checkpoint.pth") if resume else ""
    stats: Dict[str, Any] = {}
    steps_since_val = 0
    for epoch in range(start_epoch, args.epochs):
        seed_everything(args.seed + get_rank() + 100_003 * epoch)
        train_loader.sampler.set_epoch(epoch)
        if hasattr(dataset_train, "set_epoch"):
            dataset_train.set_epoch(epoch)
        tic = time.perf_counter()
        train_stats = engine.train_one_epoch(
            model, train_loader, optimizer, device, epoch, amp=args.amp, max_norm=args.clip_max_norm,
            scaler=scaler, writer=writer, global_step=epoch * len(train_loader), last_checkpoint=last_ckpt,
            world_size=args.world_size, max_steps=engine.steps_in_epoch(epoch, len(train_loader), args.max_steps),
            step_scheduler=scheduler if args.lr_per_step else None)
        if not args.lr_per_step:
            scheduler.step()
        report_skipped_samples(dataset_train, train_split)
        steps_since_val += train_stats.steps
        if steps_since_val < args.val_interval_steps and epoch < args.epochs - 1:
            continue
        steps_since_val = 0
        val = engine.evaluate(model, val_loader, device, args.amp, desc="val")
        improved = val.accuracy > best_accu or best_epoch < 0
        if improved:
            best_accu, best_epoch = val.accuracy, epoch
        stats = {"epoch": epoch, **train_stats.as_dict(), "val_accu": val.accuracy, "val_miou": val.mean_iou,
                 "best_val_accu": best_accu, "n_parameters": n_trainable,
                 "epoch_time_s": round(time.perf_counter() - tic, 3)}
        if is_main_process():
            extra = {"best_accu": best_accu, "best_epoch": best_epoch}
            last_ckpt = os.path.join(out_dir, "checkpoint.pth")
            save_checkpoint(last_ckpt, model_without_ddp, optimizer, scheduler, epoch, args, val.accuracy,
                            full=args.full_checkpoint, extra=extra)
            if improved:
                save_checkpoint(os.path.join(out_dir, "best_checkpoint.pth"), model_without_ddp, None, None,
                                epoch, args, val.accuracy, full=args.full_checkpoint, extra=extra)
            append_log_line(log_path, json.dumps(stats))
            writer.epoch_scalars(epoch, stats, val.iou, model_without_ddp)
            print(f"| epoch {epoch}: loss {train_stats.loss:.4f} (l1 {train_stats.l1:.4f}, giou "
                  f"{train_stats.giou:.4f}), val accuracy {val.accuracy:.4f}, mIoU {val.mean_iou:.4f}, "
                  f"best {best_accu:.4f} @ {best_epoch}")
        barrier()
    writer.close()
    summary = {"best_val_accu": best_accu, "best_epoch": best_epoch, "epochs": args.epochs,
               "last_epoch_stats": stats, "output_dir": out_dir}
    if is_main_process():
        write_json(os.path.join(out_dir, "result.json"), summary)
    return summary


def main(argv: Optional[Sequence[str]] = None, data_cache: Optional[DataCache] = None) -> Dict[str, Any]:
    """Entry point; ``argv`` like ``sys.argv[1:]`` (tests call this in-process; so does the in-process launcher,
    with its ``data_cache``)."""
    return run_distributed("train", functools.partial(run, data_cache=data_cache), argv)


if __name__ == "__main__":
    run_cli(main)
