"""Model builders: ``build_model(args)`` (CLIP from ``--model``) and ``build_model_from_checkpoint(ckpt, args)``
(CLIP from the checkpoint: its own tensors, or the source a compact checkpoint records, hash-checked; a recorded
source opens no file path the checkpoint names, but a local CLIP file whose bytes still have the recorded SHA-256)."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Mapping, Tuple

import torch
from clip.model import CLIP

from models.clip_hash import clip_sha256
from models.clip_vg import CLIPVG, TRAINABLE_CLIP_PARAMS
from utils.checkpoint import CHECKPOINT_SPEC_PREFIX, OFFICIAL_VISU_PROJ_IN, checkpoint_clip_state_dict
from utils.errors import InputError

__all__ = ["CLIPVG", "build_model", "build_model_from_checkpoint", "count_parameters", "describe_parameters"]


def _construct(clip_model: CLIP, args: argparse.Namespace, source: Dict[str, Any]) -> CLIPVG:
    """CLIPVG around ``clip_model`` with the fusion settings of ``args``."""
    width = clip_model.transformer.width
    given = getattr(args, "given_flags", ())
    if "vl_hidden_dim" in given and args.vl_hidden_dim != width:
        raise ValueError(f"--vl_hidden_dim {args.vl_hidden_dim}: the fusion width is the CLIP text width, "
                         f"{width} for this backbone; drop the flag or pass {width}")
    return CLIPVG(clip_model, imsize=args.imsize, max_query_len=args.max_query_len,
                  tapped_layers=getattr(args, "tapped_layers", None), vl_nheads=args.vl_nheads,
                  vl_dim_feedforward=args.vl_dim_feedforward, vl_enc_layers=args.vl_enc_layers,
                  vl_dropout=args.vl_dropout, clip_source=source)


def build_model(args: argparse.Namespace) -> CLIPVG:
    """A fresh CLIPVG: CLIP from ``args.model`` (see ``models.clip_backbone``), fusion settings from ``args``."""
    from models import clip_backbone as backbone  # imported on use: `python -m models.clip_backbone` runs it as main
    clip_model, source = backbone.load_clip(args.model, download_root=getattr(args, "clip_download_root", None),
                                   image_resolution=args.imsize)
    return _construct(clip_model, args, source)


def clip_from_source(record: Mapping[str, Any], args: argparse.Namespace, where: str = "checkpoint"
                     ) -> Tuple[CLIP, Dict[str, Any]]:
    """Rebuild the CLIP a compact checkpoint names (``clip_source``, see ``models.clip_backbone.rebuild_clip``), or,
    when that is not available, the one ``args.model`` names if it was given and differs; the SHA-256 of its
    frozen tensors must match the record."""
    from models import clip_backbone as backbone
    spec = record.get("spec") or ""
    want = record.get("sha256")
    download_root = getattr(args, "clip_download_root", None)
    try:
        clip_model, used, fallback_record = backbone.rebuild_clip(record, download_root, args.imsize), spec, None
    except backbone.ClipWeightsNotFound as exc:
        fallback = getattr(args, "model", None)
        if not fallback or fallback == spec or "model" not in getattr(args, "given_flags", ("model",)):
            raise backbone.ClipWeightsNotFound(
                f"{where}: a compact checkpoint; it needs the CLIP weights it was trained with, "
                f"{backbone.describe_source(record)} (sha256 {str(want)[:16]}), which are not available: {exc}. "
                "Pass --model with those weights (a CLIP name, hf-hub:ORG/NAME, or a file or folder).") from exc
        clip_model, fallback_record = backbone.load_clip(fallback, download_root=download_root,
                                                         image_resolution=args.imsize)
        used = fallback
    got_dims = backbone.clip_dims(clip_model)
    changed = sorted(k for k, v in (record.get("dims") or {}).items() if k in got_dims and got_dims[k] != v)
    if changed:
        raise InputError(f"{where}: the CLIP from {used} has other dimensions ({', '.join(changed)}) than the one the "
                         f"checkpoint was trained with ({backbone.describe_source(record)}); pass --model with the "
                         "right weights")
    sha = clip_sha256(clip_model, exclude=TRAINABLE_CLIP_PARAMS)
    if want and sha != want:
        raise InputError(f"{where}: the CLIP weights from {used} (sha256 {sha[:16]}) are not the ones the "
                         f"checkpoint was trained with ({backbone.describe_source(record)}, sha256 {want[:16]}); "
                         "pass --model with the right weights")
    source = dict(fallback_record or record)
    source["sha256"] = sha
    return clip_model, source


def build_model_from_checkpoint(ckpt: Mapping[str, Any], args: argparse.Namespace) -> CLIPVG:
    """A CLIPVG shaped for ``ckpt`` (load its weights with ``utils.checkpoint.load_model_state``). Full and
    official checkpoints provide CLIP themselves (architecture inferred from the tensors); compact ones name
    their CLIP in ``clip_source``, rebuilt and hash-checked."""
    from models import clip_backbone as backbone
    where = f"checkpoint {ckpt.get('checkpoint_path', '')}".strip()
    clip_state = checkpoint_clip_state_dict(ckpt)
    if clip_state is not None:
        stored = ckpt.get("clip_source") or {}
        clip_model = backbone.clip_from_state_dict(clip_state, what=where, heads=stored.get("dims"))
        sha = clip_sha256(clip_model, exclude=TRAINABLE_CLIP_PARAMS)
        if stored.get("sha256") == sha and stored.get("spec"):
            source = dict(stored)
        else:
            path = str(ckpt.get("checkpoint_path", ""))
            source = backbone.source_record(CHECKPOINT_SPEC_PREFIX + path, clip_model,
                                   origin={"kind": "checkpoint", "file": path})
            source["sha256"] = sha
    elif ckpt.get("clip_source"):
        clip_model, source = clip_from_source(ckpt["clip_source"], args, where)
    else:
        raise ValueError(f"{where}: holds neither CLIP tensors nor a clip_source record; cannot rebuild CLIP")
    return _construct(clip_model, args, source)


def count_parameters(model: torch.nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts over unique tensors."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def describe_parameters(model: torch.nn.Module) -> str:
    """The start-up line: trainable/total counts, and the official model's counts, which include its unused
    ``visu_proj`` Linear(512, hidden) (262,656 parameters for ViT-B)."""
    trainable, total = count_parameters(model)
    hidden = getattr(model, "module", model).hidden_dim
    visu = OFFICIAL_VISU_PROJ_IN * hidden + hidden
    return (f"trainable params: {trainable:,} of {total:,} ({100.0 * trainable / max(total, 1):.2f}%); the official "
            f"model also holds an unused visu_proj ({visu:,} params, dropped here): {trainable + visu:,} of "
            f"{total + visu:,} there")
