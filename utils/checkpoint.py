"""CLIP-VG checkpoints: atomic saving, safe loading, and the official key layout.

A checkpoint is a dict: ``model`` (state dict in the official key layout), ``optimizer`` and ``lr_scheduler``
(only when given), ``epoch``, ``args`` (an ``argparse.Namespace`` of plain values), ``val_accu``, ``clip_source``
(where the CLIP weights come from, with the SHA-256 of its frozen tensors) and ``format``.

- **compact** (default): ``model`` holds only what training changes (every tensor outside the frozen CLIP, plus
  ``clip.visual.positional_embedding``); CLIP is rebuilt from ``clip_source`` (a random seed, a CLIP name, a hub
  repository at its recorded commit; a recorded local file only while its bytes still have the recorded SHA-256,
  else the one the user passes as ``--model``: a record never makes the loader open any other path) and checked
  against its hash. A model whose CLIP came from another checkpoint's
  tensors is always saved full.
  A ViT-B/16 model-only compact checkpoint is ~86 MB (the ``best_checkpoint.pth`` the train script writes holds no
  optimizer state; ``checkpoint.pth`` adds the AdamW moments to resume).
- **full** (``--full_checkpoint``): ``model`` has exactly the official keys: the CLIP tensors, the official alias
  keys ``image_encoder_clip_vg.*`` / ``text_encoder_clip_vg.*`` (the same tensors, stored once) and a zero
  ``visu_proj`` of the official shape, so the official code (which loads strictly) accepts it. CLIP tensors are
  written in fp32, so a full checkpoint reloads bit-identically.

Loading accepts ours of both kinds and official checkpoints (CLIP tensors may be fp16). The official unused
``visu_proj.weight`` / ``visu_proj.bias`` are the one documented ignored key pair; aliases must equal their
``clip.*`` twins, or stand in for them when those are absent.
"""
from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from utils.errors import InputError
from utils.io import atomic_torch_save, is_torchscript_archive, refused_global

FORMAT_NAME = "clip-vg"
FORMAT_VERSION = 1
IGNORED_KEYS = ("visu_proj.weight", "visu_proj.bias")
OFFICIAL_VISU_PROJ_IN = 512  # the official visu_proj is nn.Linear(512, hidden), never used in forward
VISUAL_ALIAS, TEXT_ALIAS = "image_encoder_clip_vg.", "text_encoder_clip_vg."
CHECKPOINT_SPEC_PREFIX = "checkpoint:"
# Keys every CLIP-VG checkpoint (compact, full or official) holds.
_MARKER_KEYS = ("vl_pos_embed.weight", "bbox_embed.layers.0.weight")
_RESERVED = ("model", "optimizer", "lr_scheduler", "epoch", "args", "val_accu", "clip_source", "format",
             "checkpoint_path")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def alias_key(key: str) -> Optional[str]:
    """The official alias of a model key: ``clip.visual.X`` -> ``image_encoder_clip_vg.X``, other ``clip.X``
    (not ``logit_scale``) -> ``text_encoder_clip_vg.X``; None for keys without one."""
    if key.startswith("clip.visual."):
        return VISUAL_ALIAS + key[len("clip.visual."):]
    if key.startswith("clip.") and key != "clip.logit_scale":
        return TEXT_ALIAS + key[len("clip."):]
    return None


def _alias_target(key: str) -> Optional[str]:
    if key.startswith(VISUAL_ALIAS):
        return "clip.visual." + key[len(VISUAL_ALIAS):]
    if key.startswith(TEXT_ALIAS):
        return "clip." + key[len(TEXT_ALIAS):]
    return None


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype == b.dtype and a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b.to(a.dtype))


def canonical_state_dict(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Map a checkpoint's ``model`` dict to this model's keys: resolve the official aliases (they must equal their
    ``clip.*`` twins, or replace them when absent) and drop the ignored ``visu_proj``. Returns (state, report)."""
    out: Dict[str, torch.Tensor] = {}
    aliased: Dict[str, Tuple[str, torch.Tensor]] = {}
    ignored: List[str] = []
    for key, value in state.items():
        if key in IGNORED_KEYS:
            ignored.append(key)
        elif _alias_target(key) is not None:
            aliased[_alias_target(key)] = (key, value)
        else:
            out[key] = value
    used = 0
    for target, (key, value) in aliased.items():
        if target not in out:
            out[target] = value
            used += 1
        elif not _same_tensor(out[target], value):
            raise InputError(f"checkpoint: {key} differs from {target}; in official checkpoints these are one "
                             "shared tensor saved twice, so the file is inconsistent")
    return out, {"ignored": ignored, "aliases": len(aliased), "aliases_standing_in": used}


def checkpoint_clip_state_dict(ckpt: Mapping[str, Any]) -> Optional[Dict[str, torch.Tensor]]:
    """The CLIP tensors of a full or official checkpoint (``clip.`` prefix removed), None for a compact one."""
    state, _ = canonical_state_dict(ckpt["model"])
    clip_state = {k[len("clip."):]: v for k, v in state.items() if k.startswith("clip.")}
    return clip_state if "visual.conv1.weight" in clip_state else None


def compact_keys(model: torch.nn.Module) -> List[str]:
    """The keys a compact checkpoint holds: everything outside ``clip.*`` plus the trainable CLIP tensors."""
    model = _unwrap(model)
    trainable_clip = {f"clip.{n}" for n, p in model.clip.named_parameters() if p.requires_grad}
    return [k for k in model.state_dict() if not k.startswith("clip.") or k in trainable_clip]


def compact_state_dict(model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """What training changes, on the CPU, in the model's key order."""
    model = _unwrap(model)
    state = model.state_dict()
    return OrderedDict((k, state[k].detach().cpu()) for k in compact_keys(model))


def official_layout(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """A model state dict in the official layout and order: ``clip.*``, ``visu_proj`` (zeros of the official
    shape), the fusion parts, the alias keys (the very ``clip.*`` tensors), ``bbox_embed``, ``ml_visu_proj``."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict((k, v) for k, v in state.items() if k.startswith("clip."))
    proj = state["text_proj.weight"]
    out["visu_proj.weight"] = torch.zeros(proj.shape[0], OFFICIAL_VISU_PROJ_IN, device=proj.device)
    out["visu_proj.bias"] = torch.zeros(proj.shape[0], device=proj.device)
    tail = ("bbox_embed.", "ml_visu_proj.")
    out.update((k, v) for k, v in state.items() if not k.startswith(("clip.",) + tail))
    for prefix in (VISUAL_ALIAS, TEXT_ALIAS):
        out.update((alias_key(k), v) for k, v in state.items() if (alias_key(k) or "").startswith(prefix))
    out.update((k, v) for k, v in state.items() if k.startswith(tail))
    return out


def full_state_dict(model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Exactly the official keys and shapes (``official_layout``), on the CPU."""
    return official_layout(OrderedDict((k, v.detach().cpu()) for k, v in _unwrap(model).state_dict().items()))


def plain_args(args: Any) -> Optional[argparse.Namespace]:
    """``args`` as an ``argparse.Namespace`` of plain values (anything else, e.g. ``torch.device``, becomes str),
    so ``torch.load(weights_only=True)`` reads it back."""
    def plain(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return str(value)

    if args is None:
        return None
    items = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return argparse.Namespace(**{k: plain(v) for k, v in items.items()})


def _rebuildable(source: Mapping[str, Any]) -> bool:
    """Whether a compact checkpoint could rebuild CLIP from ``source``: not when CLIP came from a checkpoint's own
    tensors, since a record never makes the loader open another checkpoint file."""
    spec = source.get("spec") or ""
    return bool(spec) and not spec.startswith(CHECKPOINT_SPEC_PREFIX)


def save_checkpoint(path: str, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                    lr_scheduler: Any, epoch: int, args: Any, val_accu: float, full: bool = False,
                    extra: Optional[Mapping[str, Any]] = None) -> str:
    """Atomically write a compact (default) or full checkpoint; ``optimizer`` / ``lr_scheduler`` None leaves
    them out (a model-only checkpoint). ``extra`` adds plain entries (e.g. ``best_accu``). A compact checkpoint
    whose CLIP could not be rebuilt (CLIP taken from another checkpoint's tensors) is written full instead, so it
    provides its CLIP itself."""
    clash = sorted(set(extra or {}) & set(_RESERVED))
    if clash:
        raise ValueError(f"save_checkpoint: extra entries {clash} would overwrite checkpoint fields")
    model = _unwrap(model)
    if not full and not _rebuildable(model.clip_source):
        print(f"| {path}: CLIP came from {model.clip_source.get('spec') or 'an unknown source'}, which a compact "
              "checkpoint could not rebuild it from: writing a full checkpoint")
        full = True
    model.clip_weights_sha256()
    ckpt: Dict[str, Any] = {
        "model": full_state_dict(model) if full else compact_state_dict(model),
        "epoch": epoch,
        "args": plain_args(args),
        "val_accu": val_accu,
        "clip_source": dict(model.clip_source),
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION, "kind": "full" if full else "compact"},
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if lr_scheduler is not None:
        ckpt["lr_scheduler"] = lr_scheduler.state_dict()
    ckpt.update(extra or {})
    return atomic_torch_save(ckpt, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a CLIP-VG checkpoint (ours or official) with ``torch.load(weights_only=True)``, allowing
    ``argparse.Namespace``. Adds ``checkpoint_path`` (absolute). Raises ``InputError`` naming the file when it is
    a folder, missing, not a torch file, holds a global the safe loader refuses (named), or is no CLIP-VG
    checkpoint."""
    if os.path.isdir(path):
        raise InputError(f"checkpoint {path}: is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {path}: no such file")
    if is_torchscript_archive(path):
        raise InputError(f"checkpoint {path}: a TorchScript archive (an OpenAI CLIP file?), not a CLIP-VG "
                         "checkpoint; a CLIP file is passed with --model")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        blocked = refused_global(exc)
        if blocked:
            raise InputError(f"checkpoint {path}: refused by the safe loader (weights_only=True): it holds a "
                             f"{blocked}, which is not a tensor, a plain value or an argparse.Namespace, "
                             "and a checkpoint must not need code to load") from exc
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise InputError(f"checkpoint {path}: not a torch checkpoint file ({type(exc).__name__}: {first})") from exc
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, Mapping) or not all(k in state for k in _MARKER_KEYS):
        what = (f"a dict with keys {sorted(ckpt)[:8]}" if isinstance(ckpt, dict) else type(ckpt).__name__)
        raise InputError(f"checkpoint {path}: not a CLIP-VG checkpoint (expected a dict whose 'model' state dict "
                         f"holds {', '.join(_MARKER_KEYS)}; found {what})")
    ckpt["checkpoint_path"] = os.path.abspath(path)
    return ckpt


def _mismatch_cause(model: torch.nn.Module, key: str, got: Tuple[int, ...], want: Tuple[int, ...]) -> str:
    if key == "vl_pos_embed.weight":
        return (f"vl_pos_embed has {got[0]} rows in the checkpoint, this model {want[0]} (= {model.grid}x"
                f"{model.grid} patches + cls + --max_query_len {model.max_query_len} + reg): the checkpoint was "
                "trained with another --imsize, --max_query_len or backbone patch size")
    if key == "clip.visual.positional_embedding":
        return (f"the CLIP position grid differs ({got[0] - 1} vs {want[0] - 1} patches): another --imsize or "
                "backbone")
    if key.startswith("ml_visu_proj."):
        return (f"ml_visu_proj input {got[-1]} vs {want[-1]} (= {len(model.tapped_layers)} tapped layers x CLIP "
                "visual width): another backbone or --tapped_layers")
    if key.startswith("clip."):
        return "another CLIP backbone (--model)"
    return "another fusion width (backbone) or --vl_dim_feedforward"


def _refresh_clip_source(model: torch.nn.Module, ckpt: Mapping[str, Any]) -> None:
    """After loading a checkpoint's CLIP tensors: record where they now come from."""
    before = model.clip_source.get("sha256")
    model.clip_source["sha256"] = None
    sha = model.clip_weights_sha256()
    stored = ckpt.get("clip_source") or {}
    if stored.get("sha256") == sha and stored.get("spec"):
        model.clip_source = dict(stored)
    elif before != sha:
        path = str(ckpt.get("checkpoint_path", ""))
        model.clip_source.update(spec=CHECKPOINT_SPEC_PREFIX + path, seed=None,
                                 origin={"kind": "checkpoint", "file": path})


def load_model_state(model: torch.nn.Module, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """Load ``ckpt['model']`` into ``model``: strict apart from the ignored ``visu_proj``; a compact checkpoint
    must match the model's CLIP (SHA-256 of the frozen tensors). Returns a report (kind, loaded, ignored,
    aliases). One ``ValueError`` names every shape mismatch with its likely cause."""
    model = _unwrap(model)
    where = ckpt.get("checkpoint_path", "checkpoint")
    state, report = canonical_state_dict(ckpt["model"])
    expected = model.state_dict()
    compact = compact_keys(model)
    full = any(k.startswith("clip.") and k not in compact for k in state)
    required = list(expected) if full else compact
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in required if k not in state]
    if unexpected or missing:
        hint = (" (another --vl_enc_layers?)" if any(k.startswith("vl_transformer.") for k in unexpected + missing)
                else " (another backbone?)")
        raise InputError(f"{where}: keys do not match this model: missing {missing[:6]}"
                         f"{' ...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                         f"{' ...' if len(unexpected) > 6 else ''}{hint}")
    bad = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in state
           if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        lines = "; ".join(f"{k}: checkpoint {g} vs model {w} ({_mismatch_cause(model, k, g, w)})" for k, g, w in bad)
        raise InputError(f"{where}: {len(bad)} tensor shape(s) do not fit this model: {lines}")
    if not full:
        want = (ckpt.get("clip_source") or {}).get("sha256")
        if want and want != model.clip_weights_sha256():
            raise InputError(f"{where}: the model's CLIP weights ({model.clip_source.get('spec')}, sha256 "
                             f"{model.clip_weights_sha256()[:16]}) are not the ones this compact checkpoint was "
                             f"trained with ({ckpt['clip_source'].get('spec')}, sha256 {want[:16]})")
    model.load_state_dict(state, strict=False)
    if full:
        _refresh_clip_source(model, ckpt)
    report.update(kind="full" if full else "compact", loaded=len(state))
    return report


def convert_official_optimizer_state(opt_state: Mapping[str, Any]) -> Dict[str, Any]:
    """An official optimizer state (4 param groups: the first holds every trainable parameter in
    ``named_parameters`` order, with ``visu_proj``'s weight and bias at entries 1 and 2; the other 3 are empty)
    -> the single-group state of our model, whose trainable parameters are the official ones minus
    ``visu_proj``."""
    groups = opt_state.get("param_groups", [])
    if len(groups) != 4 or any(g["params"] for g in groups[1:]) or len(groups[0]["params"]) < 3:
        raise InputError("optimizer state: not an official CLIP-VG one (expected 4 param groups, only the first "
                         f"non-empty; got sizes {[len(g['params']) for g in groups]})")
    ids = list(groups[0]["params"])
    keep = ids[:1] + ids[3:]
    state = {new: opt_state["state"][old] for new, old in enumerate(keep) if old in opt_state["state"]}
    group = {k: v for k, v in groups[0].items() if k != "params"}
    group["params"] = list(range(len(keep)))
    return {"state": state, "param_groups": [group]}


def convert_official_scheduler_state(sched_state: Mapping[str, Any]) -> Dict[str, Any]:
    """An official LR-scheduler state (per-group lists of 4) -> the single-group equivalent."""
    out = dict(sched_state)
    for key in ("base_lrs", "_last_lr", "lr_lambdas"):
        if isinstance(out.get(key), list):
            out[key] = out[key][:1]
    return out
