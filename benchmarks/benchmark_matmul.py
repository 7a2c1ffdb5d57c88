"""CPU float32 matmul throughput per model shape: the default BLAS (``F.linear``) against oneDNN with a packed
frozen weight (``models/onednn_linear.py``), the two alternated in one process, one JSON object on stdout.

The shapes are those of a ViT-B/16 CLIP-VG forward pass at ``--batch_size`` (CLIP's attention and MLP products on
197 tokens per image, the fusion's on ``--fusion_tokens`` per sample, the text tower's on ``--text_tokens``); each
is timed as ``model.linear`` runs it, under ``matmul_backend("blas")`` and ``matmul_backend("onednn")``.

    python benchmarks/benchmark_matmul.py --threads 2 --batch_size 8 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: the project's packages are imported from the repository root
    sys.path.insert(0, ROOT)

import torch

from benchmarks._common import emit, environment, positive_int, set_threads
from models.onednn_linear import BACKENDS, linear, matmul_backend, onednn_available


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/benchmark_matmul.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--fusion_tokens", type=positive_int, default=205, help="fused tokens per sample")
    p.add_argument("--text_tokens", type=positive_int, default=9, help="text tokens per sample")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed runs per backend; the median counts")
    p.add_argument("--iters", type=positive_int, default=10, help="products per timed run")
    p.add_argument("--seed", type=int, default=0)
    return p


def model_shapes(batch: int, fusion_tokens: int, text_tokens: int) -> List[Tuple[str, int, int, int]]:
    """``(what, M, K, N)`` of the ViT-B/16 CLIP-VG products: CLIP's visual blocks (width 768), the fusion (512),
    the text tower (512)."""
    visual, fused, text = batch * 197, batch * fusion_tokens, batch * text_tokens
    return [("CLIP attention in-projection", visual, 768, 2304), ("CLIP attention out-projection", visual, 768, 768),
            ("CLIP MLP up", visual, 768, 3072), ("CLIP MLP down", visual, 3072, 768),
            ("fusion attention in-projection", fused, 512, 1536), ("fusion FFN up", fused, 512, 2048),
            ("fusion FFN down", fused, 2048, 512), ("text tower in-projection", text, 512, 1536)]


def _seconds(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, backend: str, iters: int) -> float:
    with matmul_backend(backend):
        start = time.perf_counter()
        for _ in range(iters):
            linear(x, weight, bias)
        return (time.perf_counter() - start) / iters


@torch.no_grad()
def measure(args: argparse.Namespace) -> Dict[str, Any]:
    """GFLOP/s of every shape under each backend (medians of ``--repeats`` alternated runs) and their ratio."""
    threads = set_threads(args.threads)
    backends = BACKENDS if onednn_available() else ("blas",)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for what, m, k, n in model_shapes(args.batch_size, args.fusion_tokens, args.text_tokens):
        x, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((m, k), (n, k), (n,)))
        for backend in backends:  # warm-up: oneDNN packs the frozen weight on first use
            _seconds(x, weight, bias, backend, 2)
        times: Dict[str, List[float]] = {b: [] for b in backends}
        for _ in range(args.repeats):
            for backend in backends:
                times[backend].append(_seconds(x, weight, bias, backend, args.iters))
        gflops = {b: 2 * m * k * n / statistics.median(t) / 1e9 for b, t in times.items()}
        row = {"what": what, "m": m, "k": k, "n": n, **{f"{b}_gflops": round(v, 1) for b, v in gflops.items()}}
        if "onednn" in gflops:
            row["onednn_over_blas"] = round(gflops["onednn"] / gflops["blas"], 3)
        rows.append(row)
    return {"benchmark": "matmul", "threads": threads, "batch_size": args.batch_size, "backends": list(backends),
            "shapes": rows, **environment(torch.device("cpu")),
            "load_average_1m_end": round(os.getloadavg()[0], 2)}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark for ``argv`` (like ``sys.argv[1:]``), print and return the JSON object."""
    return emit(measure(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
