"""Model builders: ``build_model(args)`` (CLIP from ``--model``) and ``build_model_from_checkpoint(ckpt, args)``
(CLIP from the checkpoint: its own tensors, or the source a compact checkpoint records, hash-checked)."""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Mapping, Tuple

import clip
import torch
from clip.model import CLIP

from models.clip_backbone import (RANDOM_PREFIX, ClipWeightsNotFound, clip_from_state_dict, clip_sha256, load_clip,
                                  random_clip, source_record)
from models.clip_vg import CLIPVG, TRAINABLE_CLIP_PARAMS
from utils.checkpoint import (CHECKPOINT_SPEC_PREFIX, OFFICIAL_VISU_PROJ_IN, checkpoint_clip_state_dict,
                              load_checkpoint)

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
    clip_model, source = load_clip(args.model, download_root=getattr(args, "clip_download_root", None),
                                   image_resolution=args.imsize)
    return _construct(clip_model, args, source)


def _clip_from_checkpoint_file(path: str) -> CLIP:
    state = checkpoint_clip_state_dict(load_checkpoint(path))
    if state is None:
        raise ClipWeightsNotFound(f"checkpoint {path} holds no CLIP tensors (a compact checkpoint)")
    return clip_from_state_dict(state, what=f"checkpoint {path}")


def _clip_from_spec(spec: str, record: Mapping[str, Any], args: argparse.Namespace) -> CLIP:
    if spec.startswith(RANDOM_PREFIX):
        return random_clip(spec[len(RANDOM_PREFIX):], record.get("seed") or 0,
                           (record.get("dims") or {}).get("image_resolution", args.imsize))
    if spec.startswith(CHECKPOINT_SPEC_PREFIX):
        path = spec[len(CHECKPOINT_SPEC_PREFIX):]
        if not os.path.isfile(path):
            raise ClipWeightsNotFound(f"{path}: no such checkpoint file")
        return _clip_from_checkpoint_file(path)
    if spec not in clip.available_models() and not os.path.isfile(spec):
        raise ClipWeightsNotFound(f"{spec}: no such file")
    return load_clip(spec, download_root=getattr(args, "clip_download_root", None), image_resolution=args.imsize)[0]


def clip_from_source(record: Mapping[str, Any], args: argparse.Namespace, where: str = "checkpoint"
                     ) -> Tuple[CLIP, Dict[str, Any]]:
    """Rebuild the CLIP a compact checkpoint names (``clip_source``), or, when that is gone, the one
    ``args.model`` names if it was given and differs; the SHA-256 of its frozen tensors must match the record."""
    spec = record.get("spec") or ""
    want = record.get("sha256")
    try:
        clip_model, used = _clip_from_spec(spec, record, args), spec
    except ClipWeightsNotFound as exc:
        fallback = getattr(args, "model", None)
        if not fallback or fallback == spec or "model" not in getattr(args, "given_flags", ("model",)):
            raise ClipWeightsNotFound(f"{where}: a compact checkpoint; it needs the CLIP weights it was trained "
                                      f"with, {spec} (sha256 {str(want)[:16]}), which are not available: {exc}. "
                                      "Pass --model with those weights (a CLIP name or an OpenAI CLIP file).") from exc
        clip_model, used = load_clip(fallback, download_root=getattr(args, "clip_download_root", None),
                                     image_resolution=args.imsize)[0], fallback
    sha = clip_sha256(clip_model, exclude=TRAINABLE_CLIP_PARAMS)
    if want and sha != want:
        raise ValueError(f"{where}: the CLIP weights from {used} (sha256 {sha[:16]}) are not the ones the checkpoint "
                         f"was trained with ({spec}, sha256 {want[:16]}); pass --model with the right weights")
    source = dict(record) if used == spec else source_record(used, clip_model)
    source["sha256"] = sha
    return clip_model, source


def build_model_from_checkpoint(ckpt: Mapping[str, Any], args: argparse.Namespace) -> CLIPVG:
    """A CLIPVG shaped for ``ckpt`` (load its weights with ``utils.checkpoint.load_model_state``). Full and
    official checkpoints provide CLIP themselves (architecture inferred from the tensors); compact ones name
    their CLIP in ``clip_source``, rebuilt and hash-checked."""
    where = f"checkpoint {ckpt.get('checkpoint_path', '')}".strip()
    clip_state = checkpoint_clip_state_dict(ckpt)
    if clip_state is not None:
        clip_model = clip_from_state_dict(clip_state, what=where)
        sha = clip_sha256(clip_model, exclude=TRAINABLE_CLIP_PARAMS)
        stored = ckpt.get("clip_source") or {}
        if stored.get("sha256") == sha and stored.get("spec"):
            source = dict(stored)
        else:
            source = source_record(CHECKPOINT_SPEC_PREFIX + str(ckpt.get("checkpoint_path", "")), clip_model)
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
