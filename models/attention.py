"""Where the [REG] token looked: its attention weights in one fusion layer, captured from the forward pass that
gives the box.

``RegAttention(model, layer)`` is a context manager that hooks the fusion layer ``layer`` of a ``CLIPVG``
(``vl_transformer.encoder.layers[layer]``, default the last) without changing any computation: a forward pre-hook
receives the layer's own inputs (``src``, ``pos``, ``key_padding_mask``) and computes, on the side,

    softmax(q_reg k^T / sqrt(d_head)) per head, masked keys at -inf, then the mean over the heads,

with ``q_reg`` the [REG] row's query and ``k`` every token's key, both from the layer's ``in_proj`` weights on
``src + pos`` (what the layer attends with). The box still comes from the model's unchanged computation.

The exact speed-ups of ``models/clip_vg.py`` drop masked tokens and reorder the rest before the fusion, so the
fused sequence's positions are not the input's. Each fused token's positional embedding is a row of
``vl_pos_embed`` copied by index (never computed), and each row of that table belongs to one input slot ([REG],
text position j, [CLS], patch p); the row therefore names the slot. The weights are mapped back through it, and
tokens that left the sequence (padding) get weight 0.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import UsageError


@dataclass
class RegAttentionMap:
    """[REG]'s attention in one fusion layer for a batch, by input slot (every row sums to 1 over the four parts).

    ``patches`` (B, grid, grid): weights of the image patches (row-major, as on the padded input canvas);
    ``text`` (B, max_query_len): weights of the text token positions of the model's input ids (start token at 0);
    ``cls`` (B,): the image [CLS] token; ``reg`` (B,): [REG] itself."""

    patches: torch.Tensor
    text: torch.Tensor
    cls: torch.Tensor
    reg: torch.Tensor

    def total(self) -> torch.Tensor:
        """(B,) the sum of every weight (1 up to rounding)."""
        return self.patches.flatten(1).sum(1) + self.text.sum(1) + self.cls + self.reg


def reg_attention_weights(layer: nn.Module, src: torch.Tensor, pos: torch.Tensor,
                          key_padding_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) attention of row 0 ([REG]) over the S keys of ``layer`` (a ``VLEncoderLayer``) for its inputs, mean
    over heads, float32; masked keys (``key_padding_mask`` True) get exactly 0."""
    attn = layer.self_attn
    d, h = src.shape[-1], attn.num_heads
    x = (src + pos.expand_as(src)).float()
    weight, bias = attn.in_proj_weight.float(), attn.in_proj_bias.float()
    q = F.linear(x[:, 0], weight[:d], bias[:d]).view(-1, h, d // h)
    k = F.linear(x, weight[d:2 * d], bias[d:2 * d]).view(x.shape[0], x.shape[1], h, d // h)
    logits = torch.einsum("bhc,bshc->bhs", q, k) / math.sqrt(d // h)
    logits = logits.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)


def position_slots(pos: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, S) index into ``table`` (the positional table, (T, D)) of each fused position's embedding ``pos``
    ((S, D) or (B, S, D)); ``RuntimeError`` when some embedding is not exactly one of the table's rows."""
    pos = pos.detach().float()
    flat = pos.reshape(-1, pos.shape[-1])
    table = table.detach().float()
    slots = torch.cdist(flat, table).argmin(dim=1)
    if not torch.equal(table[slots], flat):
        raise RuntimeError("fusion positions are not rows of vl_pos_embed: cannot map attention back to the input")
    return slots.view(pos.shape[:-1]) if pos.dim() == 3 else slots[None]


class RegAttention:
    """Context manager recording [REG]'s attention in fusion layer ``layer`` (negative: from the end) at every
    forward of ``model`` inside it; ``maps`` holds one ``RegAttentionMap`` per forward."""

    def __init__(self, model: nn.Module, layer: int = -1) -> None:
        layers = model.vl_transformer.encoder.layers
        if not -len(layers) <= layer < len(layers):
            raise UsageError(f"--attention_layer {layer}: the model has {len(layers)} fusion layers "
                             f"(0..{len(layers) - 1}, or -1 for the last)")
        self.model = model
        self.layer = layers[layer]
        self.maps: List[RegAttentionMap] = []
        self._signature = inspect.signature(self.layer.forward)
        self._handle: Optional[Any] = None

    def __enter__(self) -> "RegAttention":
        table = self.model.vl_pos_embed.weight
        if len(torch.unique(table.detach(), dim=0)) != len(table):
            raise RuntimeError("vl_pos_embed has repeated rows: the fused tokens cannot be told apart")
        self._handle = self.layer.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, layer: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        bound = self._signature.bind(*args, **kwargs)
        self.record(bound.arguments["src"], bound.arguments["pos"], bound.arguments["key_padding_mask"])

    def record(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor) -> None:
        """Add the map of the hooked layer for these inputs of it (what the hook does at each forward)."""
        with torch.no_grad():
            weights = reg_attention_weights(self.layer, src, pos, key_padding_mask)
            self.maps.append(self._by_slot(weights, position_slots(pos, self.model.vl_pos_embed.weight)))

    def _by_slot(self, weights: torch.Tensor, slots: torch.Tensor) -> RegAttentionMap:
        if not bool((slots[:, 0] == 0).all()):
            raise RuntimeError("the fused sequence does not start with [REG]")
        model = self.model
        full = torch.zeros(weights.shape[0], model.vl_pos_embed.weight.shape[0], dtype=weights.dtype,
                           device=weights.device)
        full.scatter_(1, slots.expand_as(weights), weights)
        full = full.cpu()
        text_end = 1 + model.max_query_len
        return RegAttentionMap(patches=full[:, text_end + 1:].view(-1, model.grid, model.grid),
                               text=full[:, 1:text_end], cls=full[:, text_end], reg=full[:, 0])


def word_weights(token_ids: List[int], weights: List[float], tokenizer: Any) -> List[Tuple[str, float]]:
    """The text's words with the summed weights of their BPE tokens, in order (a word ends with a token whose
    string ends in ``</w>``), the start and end tokens as ``<start>`` / ``<end>``; padding (id 0) left out.
    ``tokenizer``: CLIP's ``SimpleTokenizer``."""
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    out: List[Tuple[str, float]] = []
    pending: List[int] = []
    pending_weight = 0.0
    for token, weight in zip(token_ids, weights):
        if token == 0:
            continue
        if token in (start, end):
            if pending:
                out.append((tokenizer.decode(pending).strip(), pending_weight))
                pending, pending_weight = [], 0.0
            out.append(("<start>" if token == start else "<end>", float(weight)))
            continue
        pending.append(token)
        pending_weight += float(weight)
        if tokenizer.decoder[token].endswith("</w>"):
            out.append((tokenizer.decode(pending).strip(), pending_weight))
            pending, pending_weight = [], 0.0
    if pending:
        out.append((tokenizer.decode(pending).strip(), pending_weight))
    return out
