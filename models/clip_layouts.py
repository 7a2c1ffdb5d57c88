"""CLIP tensor layouts -> OpenAI's layout, exactly, plus the architecture they describe.

Two layouts exist on the hub and on disk:
- **OpenAI / open_clip** (``visual.conv1.weight``, ``transformer.resblocks.N.attn.in_proj_weight`` ...): OpenAI's
  own names, kept as they are. Head counts: an ``open_clip_config.json`` when there is one, else OpenAI's rule
  (``width // 64``, what ``clip.model.build_model`` assumes), else the ``clip_dims`` metadata of a safetensors file
  this project wrote.
- **transformers** ``CLIPModel`` (``vision_model.encoder.layers.N.self_attn.q_proj.weight`` ...) with its
  ``config.json``: q/k/v concatenated into ``in_proj_weight`` / ``in_proj_bias``, the two projections transposed,
  the patch embedding, class and position embeddings, pre/post layer norms and ``logit_scale`` renamed. Head counts
  come from ``config.json``.

Whatever ``clip.model.CLIP`` cannot compute exactly is refused with the reason (``UnrepresentableClip``): another
activation than QuickGELU, layer-norm eps other than 1e-5, an MLP other than 4x the width, a text pooling that is
not OpenAI's (end-of-text token = largest id), different embedding widths of the two towers, unknown config
entries, a ResNet CLIP.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from utils.errors import InputError

TRANSFORMERS_CONFIG = "config.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"
LAYOUT_OPENAI, LAYOUT_TRANSFORMERS = "openai", "transformers"
# Keys of TorchScript CLIP archives that are metadata, not weights (``clip.model.build_model`` drops them too).
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
_OPEN_CLIP_VISION_KEYS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
_OPEN_CLIP_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
_TF_BLOCK = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


class UnrepresentableClip(InputError):
    """Weights whose model ``clip.model.CLIP`` cannot compute exactly; the message says why."""


def detect_layout(state: Mapping[str, torch.Tensor], what: str) -> str:
    """``openai`` or ``transformers``; a ResNet CLIP or anything else is an ``InputError``."""
    if "visual.proj" in state or "visual.conv1.weight" in state:
        if "visual.attnpool.c_proj.weight" in state or "visual.layer1.0.conv1.weight" in state:
            raise UnrepresentableClip(f"{what}: a ResNet CLIP; CLIP-VG needs a ViT CLIP")
        return LAYOUT_OPENAI
    if all(k in state for k in ("vision_model.embeddings.patch_embedding.weight",
                                "text_model.embeddings.token_embedding.weight")):
        return LAYOUT_TRANSFORMERS
    if "visual.attnpool.c_proj.weight" in state:
        raise UnrepresentableClip(f"{what}: a ResNet CLIP; CLIP-VG needs a ViT CLIP")
    sample = ", ".join(sorted(state)[:3])
    raise InputError(f"{what}: not CLIP weights in OpenAI / open_clip or transformers CLIPModel layout "
                     f"(first keys: {sample or 'none'})")


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def openai_dims(state: Mapping[str, torch.Tensor], what: str, vision_heads: Optional[int] = None,
                text_heads: Optional[int] = None) -> Dict[str, int]:
    """``clip.model.CLIP`` constructor arguments (plus ``vision_heads``) of an OpenAI-layout ViT state dict;
    missing head counts follow OpenAI's ``width // 64``."""
    try:
        vision_width = int(state["visual.conv1.weight"].shape[0])
        patch = int(state["visual.conv1.weight"].shape[-1])
        grid = round(math.sqrt(state["visual.positional_embedding"].shape[0] - 1))
        text_width = int(state["ln_final.weight"].shape[0])
        dims = dict(embed_dim=int(state["text_projection"].shape[1]), image_resolution=patch * grid,
                    vision_layers=_count_blocks(state, "visual.transformer.resblocks."), vision_width=vision_width,
                    vision_patch_size=patch, context_length=int(state["positional_embedding"].shape[0]),
                    vocab_size=int(state["token_embedding.weight"].shape[0]), transformer_width=text_width,
                    transformer_heads=int(text_heads or text_width // 64),
                    transformer_layers=_count_blocks(state, "transformer.resblocks."),
                    vision_heads=int(vision_heads or vision_width // 64))
    except (KeyError, IndexError) as exc:
        raise InputError(f"{what}: not a complete OpenAI ViT CLIP state dict (missing {exc})") from exc
    for tower, width, heads in (("vision", vision_width, dims["vision_heads"]),
                                ("text", text_width, dims["transformer_heads"])):
        if heads <= 0 or width % heads:
            raise UnrepresentableClip(f"{what}: the {tower} width {width} does not split into {heads} attention heads "
                                      "(OpenAI's layout implies width // 64 heads; supply an open_clip_config.json "
                                      "or config.json that states the head count)")
    return dims


def open_clip_heads(config: Mapping[str, Any], what: str, openai_weights: bool) -> Tuple[int, int]:
    """(vision heads, text heads) of an ``open_clip_config.json``; refuses a model ``clip.model.CLIP`` cannot
    compute exactly. ``openai_weights``: the repository is known to hold OpenAI's own weights (QuickGELU)."""
    cfg = config.get("model_cfg", config)
    vision, text = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
    if not (cfg.get("quick_gelu") or openai_weights):
        raise UnrepresentableClip(f"{what}: open_clip config without \"quick_gelu\": true, so the model uses GELU; "
                                  "clip.model.CLIP computes QuickGELU, which would change the features")
    extra = sorted(set(vision) - _OPEN_CLIP_VISION_KEYS) + sorted(set(text) - _OPEN_CLIP_TEXT_KEYS)
    if extra:
        raise UnrepresentableClip(f"{what}: open_clip config entries {extra} describe a model clip.model.CLIP does "
                                  "not implement")
    for tower in (vision, text):
        if float(tower.get("mlp_ratio", 4.0)) != 4.0:
            raise UnrepresentableClip(f"{what}: mlp_ratio {tower['mlp_ratio']}; clip.model.CLIP uses 4")
    vision_width = int(vision.get("width", 768))
    return vision_width // int(vision.get("head_width", 64)), int(text.get("heads", 8))


def _check_tower(cfg: Mapping[str, Any], tower: str, what: str) -> None:
    act = cfg.get("hidden_act", "quick_gelu")
    if act != "quick_gelu":
        raise UnrepresentableClip(f"{what}: {tower} hidden_act {act!r}; clip.model.CLIP computes quick_gelu")
    eps = float(cfg.get("layer_norm_eps", 1e-5))
    if eps != 1e-5:
        raise UnrepresentableClip(f"{what}: {tower} layer_norm_eps {eps:g}; clip.model.CLIP uses 1e-5")
    width, inner = int(cfg["hidden_size"]), int(cfg["intermediate_size"])
    if inner != 4 * width:
        raise UnrepresentableClip(f"{what}: {tower} intermediate_size {inner} is not 4 x hidden_size {width}, "
                                  "as clip.model.CLIP requires")
    heads = int(cfg["num_attention_heads"])
    if heads <= 0 or width % heads:
        raise UnrepresentableClip(f"{what}: {tower} hidden_size {width} does not split into {heads} heads")


def transformers_config(path: str, what: str) -> Dict[str, Any]:
    """A transformers ``config.json`` of a CLIPModel, checked to be representable by ``clip.model.CLIP``."""
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: config.json unreadable ({exc})") from exc
    model_type = config.get("model_type")
    if model_type != "clip":
        raise UnrepresentableClip(f"{what}: config.json model_type {model_type!r}; only transformers' CLIPModel "
                                  "(\"clip\") maps onto clip.model.CLIP")
    try:
        text, vision = config["text_config"], config["vision_config"]
        _check_tower(text, "text_config", what)
        _check_tower(vision, "vision_config", what)
    except KeyError as exc:
        raise InputError(f"{what}: config.json lacks {exc}") from exc
    if int(vision.get("num_channels", 3)) != 3:
        raise UnrepresentableClip(f"{what}: vision_config num_channels {vision['num_channels']}; CLIP takes RGB")
    eos, vocab = text.get("eos_token_id", 2), int(text["vocab_size"])
    if eos not in (2, vocab - 1):
        # transformers pools text at the first eos_token_id (argmax of the ids when it is the legacy 2); CLIP
        # pools at the largest id. They agree only when the end-of-text token is the largest id.
        raise UnrepresentableClip(f"{what}: text_config eos_token_id {eos} is not the largest token id "
                                  f"({vocab - 1}); clip.model.CLIP pools the text at the largest id")
    return config


def _qkv(state: Mapping[str, torch.Tensor], prefix: str, kind: str) -> torch.Tensor:
    return torch.cat([state[f"{prefix}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)


def _map_tower(state: Mapping[str, torch.Tensor], src: str, dst: str, out: Dict[str, torch.Tensor]) -> int:
    layers = _count_blocks(state, f"{src}encoder.layers.")
    for i in range(layers):
        s, d = f"{src}encoder.layers.{i}.", f"{dst}resblocks.{i}."
        out[d + "attn.in_proj_weight"] = _qkv(state, s, "weight")
        out[d + "attn.in_proj_bias"] = _qkv(state, s, "bias")
        for tf_name, clip_name in _TF_BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"{d}{clip_name}.{kind}"] = state[f"{s}{tf_name}.{kind}"]
    return layers


def openai_from_transformers(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], what: str
                             ) -> Tuple[Dict[str, torch.Tensor], Dict[str, int]]:
    """transformers ``CLIPModel`` tensors + config -> (OpenAI-layout state dict, dims). Every input tensor is
    used (``position_ids`` index buffers aside); a missing or left-over tensor is an ``InputError``."""
    out: Dict[str, torch.Tensor] = {}
    try:
        out["token_embedding.weight"] = state["text_model.embeddings.token_embedding.weight"]
        out["positional_embedding"] = state["text_model.embeddings.position_embedding.weight"]
        _map_tower(state, "text_model.", "transformer.", out)
        out["ln_final.weight"] = state["text_model.final_layer_norm.weight"]
        out["ln_final.bias"] = state["text_model.final_layer_norm.bias"]
        out["text_projection"] = state["text_projection.weight"].t()
        out["visual.class_embedding"] = state["vision_model.embeddings.class_embedding"]
        out["visual.conv1.weight"] = state["vision_model.embeddings.patch_embedding.weight"]
        out["visual.positional_embedding"] = state["vision_model.embeddings.position_embedding.weight"]
        for tf_name, clip_name in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
            for kind in ("weight", "bias"):
                out[f"visual.{clip_name}.{kind}"] = state[f"vision_model.{tf_name}.{kind}"]
        _map_tower(state, "vision_model.", "visual.transformer.", out)
        out["visual.proj"] = state["visual_projection.weight"].t()
        out["logit_scale"] = state["logit_scale"]
    except KeyError as exc:
        raise InputError(f"{what}: incomplete transformers CLIPModel weights (missing {exc})") from exc
    leftover = sorted(k for k in state if not k.endswith("position_ids") and not _is_mapped_tf_key(k))
    if leftover:
        raise UnrepresentableClip(f"{what}: {len(leftover)} transformers tensors have no place in clip.model.CLIP "
                                  f"(e.g. {leftover[:3]})")
    text, vision = config["text_config"], config["vision_config"]
    dims = openai_dims(out, what, vision_heads=int(vision["num_attention_heads"]),
                       text_heads=int(text["num_attention_heads"]))
    if dims["image_resolution"] != int(vision.get("image_size", dims["image_resolution"])):
        raise InputError(f"{what}: config.json image_size {vision['image_size']} disagrees with the weights "
                         f"({dims['image_resolution']})")
    if out["visual.proj"].shape[1] != dims["embed_dim"]:
        raise UnrepresentableClip(f"{what}: the image and text projections have different widths "
                                  f"({out['visual.proj'].shape[1]} vs {dims['embed_dim']}); CLIP has one")
    return out, dims


def _is_mapped_tf_key(key: str) -> bool:
    known = ("text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
             "text_model.final_layer_norm.", "text_projection.weight", "vision_model.embeddings.class_embedding",
             "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
             "vision_model.pre_layrnorm.", "vision_model.post_layernorm.", "visual_projection.weight", "logit_scale")
    if key.startswith(known):
        return True
    block = key.split("encoder.layers.", 1)[-1].split(".", 1)[-1] if "encoder.layers." in key else ""
    return block.rsplit(".", 1)[0] in set(_TF_BLOCK) | {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}
