"""``F.linear`` through oneDNN on the CPU.

PyTorch's CPU ``F.linear`` / ``addmm`` in float32 goes to the default BLAS (MKL in the official wheels), which on
many CPUs (AMD ones in particular, where MKL does not pick its fastest kernels) stays well under the FMA peak.
oneDNN's matmul, which PyTorch ships for its inference fusions (``torch.ops.mkldnn._linear_pointwise``), computes
the same product with its own JIT kernels: on the 2-core AMD EPYC of benchmarks/README.md it gives 185-210 GFLOP/s
on ViT-B/16's shapes against 120-165 for ``F.linear``. Results equal ``F.linear`` up to float rounding (another
summation order), the same standard as SDPA against explicit attention.

The op has no autograd formula; ``OneDNNLinear`` supplies it: the input's gradient ``grad @ W`` through oneDNN
too, the weight's ``grad.T @ x`` and the bias's ``grad.sum(0)`` with the usual kernels (only the small fusion
layers train; CLIP's weights are frozen).

Frozen weights (``requires_grad=False``: CLIP's) are kept a second time in oneDNN's blocked layout, made on first
use and remade whenever the weight changes (its version counter or storage moves), which saves the per-call
reordering (5-10% of the matmul time; the results are bitwise those of the plain weight). The copies cost the
frozen weights' size in memory (about 0.5 GB for ViT-B/16) and go when the weights go.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = onednn_available()


_PACKED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in oneDNN's blocked layout when it is frozen (cached, remade after any change), else itself."""
    if weight.requires_grad:
        return weight
    stamp = (weight._version, weight.data_ptr(), tuple(weight.shape))
    hit = _PACKED.get(weight)
    if hit is None or hit[0] != stamp:
        hit = (stamp, torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous()))
        _PACKED[weight] = hit
    return hit[1]


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """``x @ W.T + b`` for a 2-D ``x``, through oneDNN, with the gradients of whichever inputs need them."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x if weight.requires_grad else None, weight)
        return _onednn(x, packed_weight(weight), bias)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor  # type: ignore[override]
                 ) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = _onednn(grad, weight.t(), None) if need_x else None
        grad_w = grad.t().mm(x) if need_w else None
        grad_b = grad.sum(0) if need_b else None
        return grad_x, grad_w, grad_b


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear`` takes the oneDNN path for these tensors: CPU and float32."""
    return _AVAILABLE and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           onednn: bool = True) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN when ``onednn`` and ``uses_onednn`` allow it (else
    ``F.linear`` itself: CUDA, other dtypes, builds without oneDNN)."""
    if not (onednn and uses_onednn(x, weight)):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        # On 2-D input the op's output is no view, so callers may update the result in place.
        out = OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
        return out.view(*x.shape[:-1], out.shape[-1])
    return _onednn(x, packed_weight(weight), bias)
