"""The vision-language fusion encoder: DETR-style post-norm transformer encoder layers (docs/method.md#model).

Each layer: ``q = k = src + pos``, ``v = src``; self-attention -> dropout -> residual -> LayerNorm; Linear ->
ReLU -> dropout -> Linear -> dropout -> residual -> LayerNorm. No final LayerNorm. The three dropouts are the
``nn.Dropout`` modules' rates applied by ``dropout`` (the same distribution, drawn faster on the CPU). Tensors are batch-first
(B, S, D). The attention weights live in an ``nn.MultiheadAttention`` (keys ``self_attn.in_proj_weight``,
``self_attn.in_proj_bias``, ``self_attn.out_proj.*``, as in the official checkpoints); the layer computes the
same attention with ``F.scaled_dot_product_attention`` on those weights (``benchmarks/reference_forward.py`` calls
the module itself, and the tests compare the two).

``out_rows=n`` computes only the first ``n`` output rows of the last layer (its keys and values still come from
every row): every step after the attention is row-wise, so those rows are the same as in the full computation.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from models.onednn_linear import linear


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with ``F.dropout``'s distribution: each element kept with probability ``1 - p`` and scaled
    by ``1 / (1 - p)``, in ``x``'s dtype. On the CPU the keep mask is a float32 uniform draw compared with ``p`` in
    place (drawn in float32 also under bf16 autocast: a bf16 uniform would keep 0.898 for 0.9), about 1.6 times as
    fast as ``F.dropout``, whose ``bernoulli_`` runs on one thread (docs/speed.md); elsewhere, and for ``p = 1``,
    it is ``F.dropout`` (CUDA's is one fused kernel)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0:
        return F.dropout(x, p, True)
    scale = torch.rand(x.shape, device=x.device).ge_(p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scale


class VLEncoderLayer(nn.Module):
    """One post-norm encoder layer with learned positions added to queries and keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _attention_sdpa(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor,
                        rows: int) -> torch.Tensor:
        attn = self.self_attn
        b, s, d = src.shape
        h = attn.num_heads
        weight, bias = attn.in_proj_weight, attn.in_proj_bias
        qk_in = src + pos
        if rows == s:
            q, k = linear(qk_in, weight[: 2 * d], bias[: 2 * d]).view(b, s, 2, h, d // h).permute(2, 0, 3, 1, 4)
        else:
            q = linear(qk_in[:, :rows], weight[:d], bias[:d]).view(b, rows, h, d // h).transpose(1, 2)
            k = linear(qk_in, weight[d: 2 * d], bias[d: 2 * d]).view(b, s, h, d // h).transpose(1, 2)
        v = linear(src, weight[2 * d:], bias[2 * d:]).view(b, s, h, d // h).transpose(1, 2)
        keep = ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                             dropout_p=attn.dropout if self.training else 0.0)
        return linear(out.transpose(1, 2).reshape(b, rows, d), attn.out_proj.weight, attn.out_proj.bias)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor,
                out_rows: Optional[int] = None) -> torch.Tensor:
        """``src`` (B, S, D); ``pos`` (S, D) or (B, S, D); ``key_padding_mask`` (B, S) bool, True = ignore.
        Returns (B, S, D), or only the first ``out_rows`` rows (B, out_rows, D). The matmuls use ``linear``
        (oneDNN on the CPU, ``models/onednn_linear.py``)."""
        rows = src.shape[1] if out_rows is None else out_rows
        src2 = self._attention_sdpa(src, pos, key_padding_mask, rows)
        src = self.norm1(src[:, :rows] + dropout(src2, self.dropout1.p, self.training))
        hidden = F.relu(linear(src, self.linear1.weight, self.linear1.bias))
        src2 = linear(dropout(hidden, self.dropout.p, self.training), self.linear2.weight, self.linear2.bias)
        return self.norm2(src + dropout(src2, self.dropout2.p, self.training))


class VLEncoder(nn.Module):
    """A stack of ``VLEncoderLayer`` (keys ``layers.N.*``), no final norm."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VLEncoderLayer(d_model, nhead, dim_feedforward, dropout)
                                    for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor,
                out_rows: Optional[int] = None) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            src = layer(src, pos, key_padding_mask, out_rows if i == last else None)
        return src


class VLTransformer(nn.Module):
    """The fusion module (keys ``encoder.layers.N.*``); every >1-D weight is Xavier-uniform initialised."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"--vl_nheads {nhead} does not divide the fusion width {d_model}")
        self.d_model = d_model
        self.nhead = nhead
        self.encoder = VLEncoder(num_layers, d_model, nhead, dim_feedforward, dropout)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: torch.Tensor, key_padding_mask: torch.Tensor, pos: torch.Tensor,
                out_rows: Optional[int] = None) -> torch.Tensor:
        """(B, S, D) sequence, (B, S) padding mask (True = ignore), (S, D) or (B, S, D) positions -> (B, S, D), or
        its first ``out_rows`` rows (B, out_rows, D), computed alone in the last layer."""
        return self.encoder(src, pos, key_padding_mask, out_rows)
