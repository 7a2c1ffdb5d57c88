"""Tiny CLIPs in the layouts researchers hold them in, and Hugging Face hub caches built offline.

- ``tiny_transformers_clip(seed)``: a transformers ``CLIPModel`` (64 px images, patch 16, towers 48 / 32 wide with
  3 / 2 attention heads: head counts OpenAI's ``width // 64`` rule cannot guess), every tensor randomised.
- ``save_open_clip_folder(state, folder, config)``: open_clip's files (``open_clip_model.safetensors`` holding
  OpenAI-named tensors, fp16 as open_clip ships them, plus ``open_clip_config.json``).
- ``put_in_hub_cache(cache, repo, folder, commit, main)``: copy a folder's files into ``cache`` exactly as
  ``huggingface_hub`` lays a download out (``models--ORG--NAME/blobs/<sha256>``, ``snapshots/<commit>/<name>``
  symlinks to the blobs, ``refs/main``); returns the snapshot folder.
- ``hub_environment(hf_home, offline)``: a context in which ``huggingface_hub`` runs as in a process started with
  ``HF_HOME=hf_home`` (and ``HF_HUB_OFFLINE=1``): the library reads these variables when it is imported
  (``huggingface_hub.constants``), so the context sets them and re-imports that module, and restores both after.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
from typing import Dict, Iterator, Mapping, Optional

import pytest
import torch

TINY_HF_IMSIZE = 64


def tiny_transformers_config(**text_overrides):
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=49406,
                eos_token_id=49407, pad_token_id=0)
    text.update(text_overrides)
    vision = dict(hidden_size=48, intermediate_size=192, num_hidden_layers=3, num_attention_heads=3,
                  image_size=TINY_HF_IMSIZE, patch_size=16, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)


def tiny_transformers_clip(seed: int = 0, **text_overrides):
    """A transformers ``CLIPModel`` (see the module docstring) in eval mode."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(tiny_transformers_config(**text_overrides)).eval()
    with torch.no_grad():  # layer norms and biases start at 1 / 0: randomise them so a mix-up shows
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def save_open_clip_folder(state: Mapping[str, torch.Tensor], folder: str, config: Optional[dict]) -> str:
    """open_clip's files for an OpenAI-layout ``state`` (stored fp16) and ``config``; returns ``folder``."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in state.items()},
              os.path.join(folder, "open_clip_model.safetensors"))
    if config is not None:
        with open(os.path.join(folder, "open_clip_config.json"), "w") as fh:
            json.dump(config, fh)
    return folder


def open_clip_config(dims: Mapping[str, int], quick_gelu: bool = True) -> dict:
    """An ``open_clip_config.json`` describing a CLIP of ``dims`` (as ``models.clip_backbone.clip_dims`` gives)."""
    cfg = {"embed_dim": dims["embed_dim"],
           "vision_cfg": {"image_size": dims["image_resolution"], "layers": dims["vision_layers"],
                          "width": dims["vision_width"], "patch_size": dims["vision_patch_size"],
                          "head_width": dims["vision_width"] // dims["vision_heads"]},
           "text_cfg": {"context_length": dims["context_length"], "vocab_size": dims["vocab_size"],
                        "width": dims["transformer_width"], "heads": dims["transformer_heads"],
                        "layers": dims["transformer_layers"]}}
    if quick_gelu:
        cfg["quick_gelu"] = True
    return {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                                 "std": [0.26862954, 0.26130258, 0.27577711]}}


def put_in_hub_cache(cache: str, repo: str, folder: str, commit: str, main: bool = True) -> str:
    """Copy ``folder``'s files into the hub cache layout (see the module docstring); returns the snapshot."""
    root = os.path.join(cache, "models--" + repo.replace("/", "--"))
    snapshot = os.path.join(root, "snapshots", commit)
    os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
    os.makedirs(snapshot, exist_ok=True)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as fh:
            blob = hashlib.sha256(fh.read()).hexdigest()
        shutil.copyfile(os.path.join(folder, name), os.path.join(root, "blobs", blob))
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snapshot, name))
    if main:
        os.makedirs(os.path.join(root, "refs"), exist_ok=True)
        with open(os.path.join(root, "refs", "main"), "w") as fh:
            fh.write(commit)
    return snapshot


@contextlib.contextmanager
def hub_environment(hf_home: str, offline: bool = True, extra: Optional[Dict[str, str]] = None) -> Iterator[str]:
    """Run ``huggingface_hub`` as a process started with ``HF_HOME=hf_home`` would (see the module docstring);
    yields the cache folder the library then uses."""
    from huggingface_hub import constants

    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                         "HF_ENDPOINT"):
                mp.delenv(name, raising=False)
            mp.setenv("HF_HOME", hf_home)
            if offline:
                mp.setenv("HF_HUB_OFFLINE", "1")
            for name, value in (extra or {}).items():
                mp.setenv(name, value)
            importlib.reload(constants)
            yield constants.HF_HUB_CACHE
    finally:
        importlib.reload(constants)
