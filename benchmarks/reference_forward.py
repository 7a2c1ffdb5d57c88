"""The straightforward CLIP-VG forward pass, restated from a ``CLIPVG``'s own weights: the computation of the
official code, against which the tests check the model's exact speed-ups (boxes and gradients) and which
``benchmark_model.py --paths reference`` times.

Every step is the plain one: CLIP's own ``ResidualAttentionBlock``s (``nn.MultiheadAttention``, QuickGELU as
written) on the image and on the text zero-padded to CLIP's context length, with autograd wherever it is enabled;
the fusion layers' ``nn.MultiheadAttention`` modules on the full fused sequence (every padded text token and image
patch, masked as keys) and ``nn.Linear`` (``F.linear``) for every matmul; every output row of every layer.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.clip_vg import CLIPVG, patch_padding_mask
from models.vl_transformer import VLEncoderLayer, VLTransformer


def reference_encode_image(model: CLIPVG, img: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 1 + N_patch, len(taps) * width): CLIP's own blocks (sequence-first), tapped outputs."""
    visual = model.clip.visual
    x = visual.conv1(img).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
    kept = []
    for i in range(model.tapped_layers[-1] + 1):
        x = visual.transformer.resblocks[i](x.transpose(0, 1)).transpose(0, 1)
        if i in model.tapped_layers:
            kept.append(x)
    return torch.cat(kept, dim=-1)


def reference_encode_text(model: CLIPVG, text: torch.Tensor) -> torch.Tensor:
    """(B, L) token ids -> (B, L, embed_dim): the text zero-padded to the context length through CLIP's own blocks
    (with their fixed causal mask), then ``ln_final`` and ``text_projection`` at the first L positions."""
    clip = model.clip
    length = text.shape[1]
    full = F.pad(text, (0, clip.context_length - length))
    x = clip.token_embedding(full) + clip.positional_embedding
    x = clip.transformer(x.transpose(0, 1)).transpose(0, 1)[:, :length]
    return clip.ln_final(x) @ clip.text_projection


def reference_encoder_layer(layer: VLEncoderLayer, src: torch.Tensor, pos: torch.Tensor,
                            key_padding_mask: torch.Tensor) -> torch.Tensor:
    """One post-norm fusion layer through its ``nn.MultiheadAttention`` and ``nn.Linear`` modules, every row."""
    qk = src + pos.expand_as(src)
    src2 = layer.self_attn(qk, qk, src, key_padding_mask=key_padding_mask, need_weights=False)[0]
    src = layer.norm1(src + layer.dropout1(src2))
    src2 = layer.linear2(layer.dropout(F.relu(layer.linear1(src))))
    return layer.norm2(src + layer.dropout2(src2))


def reference_fusion(fusion: VLTransformer, src: torch.Tensor, key_padding_mask: torch.Tensor,
                     pos: torch.Tensor) -> torch.Tensor:
    """``VLTransformer``'s function, layer by layer with ``reference_encoder_layer``: (B, S, D) -> (B, S, D)."""
    for layer in fusion.encoder.layers:
        src = reference_encoder_layer(layer, src, pos, key_padding_mask)
    return src


def reference_fusion_inputs(model: CLIPVG, img: torch.Tensor, img_mask: torch.Tensor, text: torch.Tensor
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The full fused sequence [REG] + text + image (B, S, D), its padding mask (B, S) (True = masked key) and the
    positions (S, D), from the reference encoders."""
    model._check_inputs(img, img_mask, text)
    patch_mask = patch_padding_mask(img_mask, model.grid)
    batch, length = text.shape
    visu = model.ml_visu_proj(reference_encode_image(model, img))
    words = model.text_proj(reference_encode_text(model, text))
    reg = model.reg_token.weight.expand(batch, 1, -1)
    src = torch.cat([reg, words, visu], dim=1)
    table = model.vl_pos_embed.weight
    pos = torch.cat([table[: 1 + length], table[1 + model.max_query_len:]], dim=0)
    unmasked = torch.zeros(batch, 1, dtype=torch.bool, device=img.device)
    mask = torch.cat([unmasked, text == 0, unmasked, patch_mask], dim=1)
    return src, mask, pos


def reference_forward(model: CLIPVG, img: torch.Tensor, img_mask: torch.Tensor, text: torch.Tensor
                      ) -> torch.Tensor:
    """The boxes (B, 4) of ``model(img, img_mask, text)``, computed the straightforward way."""
    out = reference_fusion(model.vl_transformer, *reference_fusion_inputs(model, img, img_mask, text))
    return model.bbox_embed(out[:, 0]).sigmoid()


class ReferenceModel(nn.Module):
    """A ``CLIPVG`` (its weights, train/eval mode and parameters) whose forward pass is ``reference_forward``:
    what ``engine`` runs for ``benchmark_model.py --paths reference``."""

    def __init__(self, model: CLIPVG) -> None:
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor, img_mask: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return reference_forward(self.model, img, img_mask, text)
