"""``F.linear`` on the CPU in float32 through oneDNN, or through the default BLAS.

PyTorch's CPU ``F.linear`` / ``addmm`` in float32 goes to the default BLAS (MKL in the official wheels). oneDNN's
matmul, which PyTorch ships for its inference fusions (``torch.ops.mkldnn._linear_pointwise``), computes the same
product with its own JIT kernels. Measured per ViT-B/16 shape with 2 threads (``benchmarks/benchmark_matmul.py``,
docs/speed.md): on a 2-core AMD EPYC (AVX2) oneDNN gives 1.3-1.5x MKL's GFLOP/s; on a 2-core Intel Xeon (AVX-512,
AMX) both run at the FMA peak (oneDNN 0.99-1.07x MKL). So the backend is chosen by one deterministic rule, the same
on every machine: oneDNN whenever PyTorch has it, unless the environment variable ``CLIP_VG_CPU_MATMUL=blas`` asks for
``F.linear`` (``onednn``, the default, asks for oneDNN). Results equal ``F.linear`` up to float rounding (another
summation order), the same standard as SDPA against explicit attention. ``matmul_backend(name)`` overrides the
backend for a block of code in the current thread (the demo's tiny-CLIP pretraining keeps ``F.linear``).

The op has no autograd formula; ``OneDNNLinear`` supplies it: the input's gradient ``grad @ W`` through oneDNN
too, the weight's ``grad.T @ x`` and the bias's ``grad.sum(0)`` with the usual kernels (only the small fusion
layers train; CLIP's weights are frozen).

Frozen weights (``requires_grad=False``: CLIP's) are kept in oneDNN's blocked layout, for the forward product and
(transposed) for the input's gradient, made on first use and remade whenever the weight changes (its version
counter or storage moves), which saves the per-call reordering; the results are bitwise those of the plain
weight. The copies cost up to twice the frozen weights' size in memory (about 0.5 GB each for ViT-B/16, the
transposed one only once a gradient flows through them) and go when the weights go.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from utils.errors import UsageError

BACKEND_ENV = "CLIP_VG_CPU_MATMUL"
"""Environment variable choosing the CPU float32 matmul backend: ``onednn`` (default) or ``blas`` (``F.linear``)."""
BACKENDS = ("onednn", "blas")
_SCOPED_BACKEND: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("clip_vg_cpu_matmul", default=None)


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = onednn_available()


def cpu_matmul_backend() -> str:
    """The CPU float32 matmul backend: the one ``matmul_backend`` set for this block of code, else
    ``$CLIP_VG_CPU_MATMUL`` (``onednn`` or ``blas``), default ``onednn``; ``blas`` when this PyTorch build has no
    oneDNN linear op."""
    choice = _SCOPED_BACKEND.get() or os.environ.get(BACKEND_ENV, "onednn").strip().lower() or "onednn"
    if choice not in BACKENDS:
        raise UsageError(f"{BACKEND_ENV}={choice!r}: expected one of {', '.join(BACKENDS)}")
    return choice if _AVAILABLE else "blas"


@contextlib.contextmanager
def matmul_backend(name: str) -> Iterator[None]:
    """Use the CPU matmul backend ``name`` (``onednn`` or ``blas``) inside the ``with`` block, in this thread only."""
    if name not in BACKENDS:
        raise ValueError(f"matmul backend {name!r}: expected one of {', '.join(BACKENDS)}")
    token = _SCOPED_BACKEND.set(name)
    try:
        yield
    finally:
        _SCOPED_BACKEND.reset(token)


_PACKED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _derived(weight: torch.Tensor, kind: Any, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``make(weight)``, kept with the weight under ``kind`` and remade whenever the weight changes (its version
    counter or storage moves); dropped when the weight goes."""
    stamp = (weight._version, weight.data_ptr(), tuple(weight.shape))
    cache: Dict[Any, Tuple[tuple, torch.Tensor]] = _PACKED.setdefault(weight, {})
    hit = cache.get(kind)
    if hit is None or hit[0] != stamp:
        hit = (stamp, make(weight.detach()))
        cache[kind] = hit
    return hit[1]


def packed_weight(weight: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """``weight`` (or ``weight.T`` with ``transposed``) in oneDNN's blocked layout when it is frozen (cached,
    remade after any change), else the plain tensor."""
    plain = weight.t() if transposed else weight
    if weight.requires_grad:
        return plain
    return _derived(weight, transposed,
                    lambda w: torch.ops.mkldnn._reorder_linear_weight((w.t() if transposed else w).contiguous()))


def autocast_weight(weight: torch.Tensor) -> torch.Tensor:
    """Under autocast (eager), a frozen float32 ``weight`` cast once to the autocast dtype and kept (autocast
    itself caches only the casts of trainable leaves, so it would cast CLIP's frozen weights at every call: about
    as long as the bf16 matmul itself on the CPU); else ``weight``. The values are autocast's own cast."""
    device = weight.device.type
    if (weight.requires_grad or weight.dtype != torch.float32 or weight.is_meta or not torch.is_autocast_enabled(device)
            or torch.compiler.is_compiling()):
        return weight
    dtype = torch.get_autocast_dtype(device)
    return _derived(weight, dtype, lambda w: w.to(dtype))


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
        grad_x = _onednn(grad, packed_weight(weight, transposed=True), None) if need_x else None
        grad_w = grad.t().mm(x) if need_w else None
        grad_b = grad.sum(0) if need_b else None
        return grad_x, grad_w, grad_b


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear`` takes the oneDNN path for these tensors: CPU, float32 outside CPU autocast (under
    ``--amp bf16`` the matmuls are autocast's), eager mode (under ``torch.compile`` the compiler picks the matmul
    kernels; inductor cannot lower the op on a weight that is not a graph constant), and
    ``cpu_matmul_backend() == 'onednn'``."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and cpu_matmul_backend() == "onednn")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where ``uses_onednn`` allows it (else ``F.linear`` itself:
    CUDA, autocast (frozen weights cast once, ``autocast_weight``), ``torch.compile``, other dtypes,
    ``CLIP_VG_CPU_MATMUL=blas``, builds without oneDNN)."""
    if not uses_onednn(x, weight):
        return F.linear(x, autocast_weight(weight), bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        # A 2-D input gets the Function's own output, no view of it: updating a view in place under autograd
        # would copy the whole gradient in the backward pass (CopySlices), so callers that update the result in
        # place pass 2-D inputs.
        if x.dim() == 2:
            return OneDNNLinear.apply(x, weight, bias)
        out = OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
        return out.view(*x.shape[:-1], out.shape[-1])
    return _onednn(x, packed_weight(weight), bias)
