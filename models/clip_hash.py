"""The SHA-256 of a CLIP's tensors, which compact checkpoints check their CLIP against (a module of its own so that
``models.clip_vg`` needs nothing from the loaders)."""
from __future__ import annotations

import hashlib
from typing import Iterable

import torch
from clip.model import CLIP


def clip_sha256(model: CLIP, exclude: Iterable[str] = ()) -> str:
    """SHA-256 of a CLIP's tensors as fp32 (name, shape and values, names sorted), leaving out ``exclude``
    (the tensors CLIP-VG trains, which compact checkpoints store themselves)."""
    skip = set(exclude)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in skip:
            continue
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(data.shape)};".encode())
        digest.update(data.numpy().reshape(-1).view("uint8"))
    return digest.hexdigest()
