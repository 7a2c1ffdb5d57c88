"""Tiny CLIPs for tests (shared by every test module; keep the signatures stable).

- ``tiny_clip(seed, image_resolution)``: the fp32 ``random:tiny`` CLIP (same weights as ``--model random:tiny``
  with that seed).
- ``tiny_clip_state_dict(seed, image_resolution)``: its state dict (fp32, CLIP's own key names).
- ``write_tiny_clip_file(path, torchscript, image_resolution, seed)``: an OpenAI-format CLIP file (TorchScript
  archive as released, or a plain ``torch.save``d state dict), fp16 weights as OpenAI ships them; returns the fp32
  CLIP holding exactly the stored values (what ``--model path`` must load).
- ``tiny_args(*flags, script='train')``: parsed shared arguments for a ``random:tiny`` model at ``--imsize 64``.
- ``official_key_reference()``: the official checkpoint key list (tests/data/official_checkpoint_keys.json, every key
  and shape of an official checkpoint): per backbone, keys and shapes, trainable names and parameter counts.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import warnings
from typing import Any, Dict

import clip
import torch
from clip.model import CLIP, convert_weights

from models.clip_backbone import random_clip
from utils.args import parse_args

TINY_IMSIZE = 64
OFFICIAL_KEYS_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "official_checkpoint_keys.json")


def tiny_clip(seed: int = 0, image_resolution: int = TINY_IMSIZE) -> CLIP:
    """The fp32 ``random:tiny`` CLIP for ``seed``."""
    return random_clip("tiny", seed, image_resolution)


def tiny_clip_state_dict(seed: int = 0, image_resolution: int = TINY_IMSIZE) -> Dict[str, torch.Tensor]:
    """State dict (fp32) of ``tiny_clip(seed, image_resolution)``."""
    return {k: v.clone() for k, v in tiny_clip(seed, image_resolution).state_dict().items()}


def write_tiny_clip_file(path: str, torchscript: bool = True, image_resolution: int = TINY_IMSIZE,
                         seed: int = 0) -> CLIP:
    """Write a tiny CLIP as OpenAI does (fp16 weights; TorchScript or plain state dict) and return the fp32 CLIP
    with the stored values."""
    model = tiny_clip(seed, image_resolution).eval()
    convert_weights(model)
    if torchscript:
        example = (torch.zeros(1, 3, image_resolution, image_resolution), clip.tokenize(["a photo"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(model, example, check_trace=False), path)
    else:
        torch.save(model.state_dict(), path)
    return copy.deepcopy(model).float()


def tiny_args(*flags: str, script: str = "train") -> argparse.Namespace:
    """Shared-parser arguments for ``--model random:tiny --imsize 64`` plus ``flags``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse_args(script, ["--model", "random:tiny", "--imsize", str(TINY_IMSIZE), *flags])


def official_key_reference() -> Dict[str, Any]:
    """``{backbone: {state_dict_keys_and_shapes, trainable_parameter_names, n_parameters_unique,
    n_trainable_parameters}}`` of the official release."""
    with open(OFFICIAL_KEYS_JSON) as fh:
        return json.load(fh)["models"]
