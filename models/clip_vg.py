"""CLIPVG: multi-layer CLIP visual features + per-token CLIP text features, fused by a transformer with a [REG]
token whose output is regressed to the box (docs/method.md#model, the official "ML_CLIP_VG" model).

State-dict keys follow the official layout (``clip.*``, ``text_proj``, ``reg_token``, ``vl_pos_embed``,
``vl_transformer.encoder.layers.N.*``, ``bbox_embed.layers.N.*``, ``ml_visu_proj``); the official unused
``visu_proj`` and the alias modules are handled by ``utils/checkpoint.py``. Trainable parameters are registered in
the official order minus ``visu_proj``, so an official optimizer state converts index by index.

The forward pass is one computation, exact speed-ups of the straightforward one (CLIP's own blocks on the text
zero-padded to the context length, ``nn.MultiheadAttention`` fusion on the full sequence, ``F.linear``), which
``benchmarks/reference_forward.py`` restates and the tests compare with it, boxes and gradients: (a) the text tower
runs only up to the longest query of the batch and the padded text tokens leave the fused sequence (they are
masked keys, and CLIP's causal mask makes earlier positions independent of later ones); (b) the text tower, which
has no trainable tensor, runs under ``no_grad``; (c) fusion attention and (d) CLIP block attention use
``F.scaled_dot_product_attention`` on the same weights, and the CLIP MLP computes QuickGELU as
``silu(1.702 h) / 1.702`` (one fused activation kernel instead of three element-wise passes; the scalings ride on
``addmm``, or follow oneDNN's matmul in place, ``clip_mlp``); (e) the fusion computes only what the [REG] output depends on: masked tokens (padded text,
padded image patches) leave the fused sequence, since they are ignored as keys and every other step is per token,
and the last fusion layer computes its [REG] row alone; (f) on the CPU in float32 the matmuls go through oneDNN
(``models/onednn_linear.py``), equal to ``F.linear`` up to float rounding.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from clip.model import CLIP, QuickGELU, ResidualAttentionBlock
from torch import nn

from models.clip_hash import clip_sha256
from models.onednn_linear import autocast_weight, linear, uses_onednn
from models.vl_transformer import VLTransformer

# The CLIP tensors CLIP-VG trains (names inside the CLIP module); everything else of CLIP stays frozen.
TRAINABLE_CLIP_PARAMS = ("visual.positional_embedding",)


QUICK_GELU_SCALE = 1.702
"""CLIP's QuickGELU: ``h * sigmoid(1.702 h)``."""


def default_tapped_layers(depth: int) -> List[int]:
    """Blocks ``[0, L//3-1, 2L//3-1, L-1]`` (deduplicated): [0, 3, 7, 11] for 12 blocks, [0, 7, 15, 23] for 24."""
    return sorted({max(i, 0) for i in (0, depth // 3 - 1, 2 * depth // 3 - 1, depth - 1)})


def resolve_tapped_layers(spec: Union[None, str, Sequence[int]], depth: int) -> List[int]:
    """``--tapped_layers`` ("a,b,c", a sequence, or None for the default) -> sorted unique block indices."""
    if spec is None or spec == "":
        return default_tapped_layers(depth)
    try:
        layers = [int(tok) for tok in spec.split(",")] if isinstance(spec, str) else [int(i) for i in spec]
    except ValueError as exc:
        raise ValueError(f"--tapped_layers {spec!r}: expected comma-separated block indices, e.g. '0,3,7,11'") from exc
    bad = [i for i in layers if not 0 <= i < depth]
    if not layers or bad:
        raise ValueError(f"--tapped_layers {spec!r}: indices must lie in 0..{depth - 1} (the CLIP visual tower has "
                         f"{depth} blocks)")
    return sorted(set(layers))


def patch_padding_mask(img_mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, S, S) image padding mask (True/1 = padding) -> (B, grid*grid) patch mask, as torchvision 0.10 resized
    integer masks: bilinear, ``align_corners=False``, no antialiasing, rounded half to even; non-zero = padded."""
    resized = F.interpolate(img_mask[:, None].float(), size=(grid, grid), mode="bilinear", align_corners=False,
                            antialias=False)
    return torch.round(resized).flatten(1) != 0


def _autograd_records(t: torch.Tensor) -> bool:
    """Whether autograd records operations on ``t`` (when it does not, fresh results may be updated in place)."""
    return torch.is_grad_enabled() and t.requires_grad


def clip_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLIP's ``c_fc -> QuickGELU -> c_proj`` on (..., D). On the CPU in float32 both matmuls run through oneDNN
    where ``uses_onednn`` says so (``models/onednn_linear.py``). QuickGELU is ``silu(u) / 1.702`` with
    ``u = 1.702 * c_fc(x)`` (one fused activation instead of ``sigmoid`` and two products): after oneDNN the
    scalings are in-place passes (autograd needs neither product's operand, only ``silu``'s input); elsewhere both
    ride on the matmuls (``addmm``'s alpha and beta). Another activation runs as it is."""
    if not isinstance(mlp.gelu, QuickGELU):
        return mlp(x)
    fc, proj = mlp.c_fc, mlp.c_proj
    flat = x.reshape(-1, x.shape[-1])
    if uses_onednn(x, fc.weight):
        u = linear(flat, fc.weight, fc.bias).mul_(QUICK_GELU_SCALE)
        act = F.silu(u, inplace=not _autograd_records(u)).div_(QUICK_GELU_SCALE)
        out = linear(act, proj.weight, proj.bias)
        return out.view(*x.shape[:-1], out.shape[-1])
    u = torch.addmm(fc.bias, flat, autocast_weight(fc.weight).t(), beta=QUICK_GELU_SCALE, alpha=QUICK_GELU_SCALE)
    u = F.silu(u, inplace=not _autograd_records(u))
    out = torch.addmm(proj.bias, u, autocast_weight(proj.weight).t(), alpha=1.0 / QUICK_GELU_SCALE)
    return out.view(*x.shape[:-1], out.shape[-1])


def clip_block_sdpa(block: ResidualAttentionBlock, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """A CLIP residual block on a batch-first (B, L, D) input with ``scaled_dot_product_attention`` (``causal``
    replaces the text tower's additive -inf mask), ``clip_mlp`` and ``linear`` (oneDNN matmuls on the CPU).
    Without autograd the residual sums go into the fresh branch outputs (same sums, fewer new buffers); ``x``
    itself is never modified."""
    attn = block.attn
    b, s, d = x.shape
    h = attn.num_heads
    qkv = linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).view(b, s, 3, h, d // h)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    branch = linear(out.transpose(1, 2).reshape(b, s, d), attn.out_proj.weight, attn.out_proj.bias)
    if _autograd_records(branch):
        x = x + branch
        return x + clip_mlp(block.mlp, block.ln_2(x))
    x = branch.add_(x)
    return clip_mlp(block.mlp, block.ln_2(x)).add_(x)


def clip_text_blocks_sdpa(clip_model: CLIP, text: torch.Tensor) -> torch.Tensor:
    """CLIP's text tower up to (not including) ``ln_final`` on the given (B, L) token ids only: token and position
    embeddings, then every block with a causal ``scaled_dot_product_attention`` (``clip_block_sdpa``) -> (B, L, D).
    The causal mask keeps later (padding) positions from earlier ones, so trimming trailing padding is exact."""
    x = clip_model.token_embedding(text) + clip_model.positional_embedding[:text.shape[1]]
    for block in clip_model.transformer.resblocks:
        x = clip_block_sdpa(block, x, causal=True)
    return x


def keep_unmasked(src: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, length: int
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's unmasked tokens to the front (in sequence order) and keep the first ``length`` positions
    (at least the most unmasked tokens of any row): ``src`` (B, S, D), ``mask`` (B, S), ``pos`` (S, D) ->
    (B, length, D), (B, length), (B, length, D). Rows with fewer unmasked tokens keep some masked ones."""
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)[:, :length]
    src = torch.gather(src, 1, order[..., None].expand(-1, -1, src.shape[-1]))
    return src, torch.gather(mask, 1, order), pos[order]


class MLP(nn.Module):
    """Linear layers (keys ``layers.N.*``) with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip([input_dim] + dims, dims + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class CLIPVG(nn.Module):
    """The CLIP-VG grounding model around an OpenAI ``clip.model.CLIP`` (ViT).

    ``forward(img, img_mask, text) -> (B, 4)`` boxes (cx, cy, w, h) in [0, 1]: ``img`` (B, 3, S, S) normalised,
    ``img_mask`` (B, S, S) bool (True = padding), ``text`` (B, Lq) CLIP token ids (0 = padding), Lq <=
    ``max_query_len``. The fusion width is CLIP's text width (512 for ViT-B, 768 for ViT-L).
    """

    def __init__(self, clip_model: CLIP, imsize: int = 224, max_query_len: int = 77,
                 tapped_layers: Union[None, str, Sequence[int]] = None, vl_nheads: int = 8,
                 vl_dim_feedforward: int = 2048, vl_enc_layers: int = 6, vl_dropout: float = 0.1,
                 clip_source: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        visual = clip_model.visual
        self.patch_size = int(visual.conv1.kernel_size[0])
        self.grid = round(math.sqrt(visual.positional_embedding.shape[0] - 1))
        if imsize != self.grid * self.patch_size:
            native = self.grid * self.patch_size
            raise ValueError(f"--imsize {imsize}: the CLIP backbone (patch {self.patch_size}, {self.grid}x{self.grid}"
                             f" position grid) takes {native}x{native} images; use --imsize {native}")
        if not 1 <= max_query_len <= clip_model.context_length:
            raise ValueError(f"--max_query_len {max_query_len}: must be between 1 and CLIP's context length "
                             f"{clip_model.context_length}")
        self.imsize = imsize
        self.max_query_len = max_query_len
        self.tapped_layers = resolve_tapped_layers(tapped_layers, visual.transformer.layers)
        self.hidden_dim = hidden = clip_model.transformer.width
        self.clip_source = dict(clip_source) if clip_source else {}

        self.clip = clip_model
        self.text_proj = nn.Linear(clip_model.text_projection.shape[1], hidden)
        self.reg_token = nn.Embedding(1, hidden)
        self.vl_pos_embed = nn.Embedding(self.grid ** 2 + 1 + max_query_len + 1, hidden)
        self.vl_transformer = VLTransformer(hidden, vl_nheads, vl_enc_layers, vl_dim_feedforward, vl_dropout)
        self.bbox_embed = MLP(hidden, hidden, 4, 3)
        self.ml_visu_proj = nn.Linear(len(self.tapped_layers) * visual.transformer.width, hidden)
        self.freeze_clip()

    def freeze_clip(self) -> None:
        """The one place that decides what trains: every CLIP tensor frozen except ``TRAINABLE_CLIP_PARAMS``."""
        for name, param in self.clip.named_parameters():
            param.requires_grad_(name in TRAINABLE_CLIP_PARAMS)

    def clip_weights_sha256(self) -> str:
        """SHA-256 of the frozen CLIP tensors (computed once, kept in ``clip_source['sha256']``)."""
        if not self.clip_source.get("sha256"):
            self.clip_source["sha256"] = clip_sha256(self.clip, exclude=TRAINABLE_CLIP_PARAMS)
        return self.clip_source["sha256"]

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1 + N_patch, len(taps) * visual width): the tapped blocks' outputs, concatenated."""
        visual = self.clip.visual
        x = visual.conv1(img).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
        kept = []
        blocks = visual.transformer.resblocks
        for i in range(self.tapped_layers[-1] + 1):
            x = clip_block_sdpa(blocks[i], x, causal=False)
            if i in self.tapped_layers:
                kept.append(x)
        return torch.cat(kept, dim=-1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, embed_dim): ``ln_final`` and ``text_projection`` at every position, the text
        tower run (without autograd: it has no trainable tensor) on the given L positions with a causal mask."""
        model = self.clip
        with torch.no_grad():
            x = clip_text_blocks_sdpa(model, text)
            return model.ln_final(x) @ model.text_projection

    def _check_inputs(self, img: torch.Tensor, img_mask: torch.Tensor, text: torch.Tensor) -> None:
        b, s = img.shape[0], self.imsize
        if img.dim() != 4 or tuple(img.shape[1:]) != (3, s, s):
            raise ValueError(f"img: expected (B, 3, {s}, {s}) for --imsize {s}, got {tuple(img.shape)}")
        if tuple(img_mask.shape) != (b, s, s):
            raise ValueError(f"img_mask: expected ({b}, {s}, {s}), got {tuple(img_mask.shape)}")
        if text.dim() != 2 or text.shape[0] != b or not 1 <= text.shape[1] <= self.max_query_len:
            raise ValueError(f"text: expected ({b}, Lq) token ids with 1 <= Lq <= --max_query_len "
                             f"{self.max_query_len}, got {tuple(text.shape)}")

    @staticmethod
    def _query_length(text: torch.Tensor) -> torch.Tensor:
        used = (text != 0).any(dim=0)
        positions = torch.arange(1, text.shape[1] + 1, device=text.device)
        return (used * positions).max().clamp(min=1)

    @staticmethod
    def query_length(text: torch.Tensor) -> int:
        """1 + the last position holding a non-padding token in any row (at least 1)."""
        return int(CLIPVG._query_length(text))

    @staticmethod
    def sequence_lengths(text: torch.Tensor, patch_mask: torch.Tensor) -> Tuple[int, int]:
        """``(query_length(text), most unmasked fused tokens of any row)``: [REG], [CLS], the non-padding text
        tokens and the unpadded patches. Read back together: the forward pass's one host sync."""
        unmasked = 2 + (text != 0).sum(dim=1) + (~patch_mask).sum(dim=1)
        length, keep = torch.stack([CLIPVG._query_length(text), unmasked.max()]).tolist()
        return length, keep

    def forward(self, img: torch.Tensor, img_mask: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self._check_inputs(img, img_mask, text)
        patch_mask = patch_padding_mask(img_mask, self.grid)
        # Trimming and pruning read values: under torch.compile and on the meta device (shape inference) the
        # shapes stay static instead.
        dynamic = not torch.compiler.is_compiling() and not text.is_meta
        if dynamic:
            length, keep = self.sequence_lengths(text, patch_mask)
            text = text[:, :length]
        batch, length = text.shape
        visu = self.ml_visu_proj(self.encode_image(img))
        words = self.text_proj(self.encode_text(text))
        reg = self.reg_token.weight.expand(batch, 1, -1)
        src = torch.cat([reg, words, visu], dim=1)

        table = self.vl_pos_embed.weight
        pos = torch.cat([table[: 1 + length], table[1 + self.max_query_len:]], dim=0)
        unmasked = torch.zeros(batch, 1, dtype=torch.bool, device=img.device)
        mask = torch.cat([unmasked, text == 0, unmasked, patch_mask], dim=1)
        if dynamic:
            src, mask, pos = keep_unmasked(src, mask, pos, keep)
        out = self.vl_transformer(src, mask, pos, out_rows=1)
        return self.bbox_embed(out[:, 0]).sigmoid()
