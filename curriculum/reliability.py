"""Reliability arithmetic (docs/curriculum.md): histograms, summary statistics, ``percent(H, h)`` and ``select`` (the
samples in it), and the official subsets.

Exact-decimal convention: reliabilities (IoUs in [0, 1]) are quantised to integer multiples of 1e-9 before any
comparison, and thresholds are read as exact decimals at the same resolution. So ``percent(values, 0.3)`` keeps a
sample scored 0.3 even when float arithmetic produced 0.29999999999999993, and histogram bins have exact edges.
Values within 1e-6 outside [0, 1] (IoU rounding noise) are clipped; anything else is an error naming the sample.

Histogram bins: ``bins`` equal bins over (0, 1]; bin k covers (k/bins, (k+1)/bins] (left-open, right-closed, so
1.0 falls in the last bin). A reliability of exactly 0 lies outside (0, 1]: it is in no bin and is reported
separately as ``count_zero`` (the paper's figures are drawn over (0, 1]).

Official subsets (the names the official scoring script writes, contents in the input split's own tuple layout):
``{dataset}_{split}_refine_0_0.pth`` ... ``_0_9.pth`` hold the samples with reliability > 0.0, > 0.1, ..., > 0.9
(strictly greater), ``_refine_1_0.pth`` those == 1.0; the low-reliability lists
``{dataset}_{split}_bad_label_0_0.pth`` (== 0) and ``{dataset}_{split}_bad_label_0_4.pth`` (< 0.4). Unlike the
official lists, the low-reliability lists keep the input tuples unchanged (no IoU appended), so they load as a
split; the IoU of every sample is in the per-sample JSON lines.
"""
from __future__ import annotations

import io
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from utils.errors import InputError
from utils.io import atomic_torch_save, atomic_write_bytes, write_json


BINS = 1000
RESOLUTION = 10 ** 9  # reliabilities and thresholds are compared as integer multiples of 1 / RESOLUTION
_TOLERANCE = 1e-6
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
OFFICIAL_SPLIT = "train_pseudo"


def quantize(values: Any) -> np.ndarray:
    """Reliabilities as int64 multiples of 1e-9 in [0, 1e9]; ``ValueError`` naming the first bad sample index."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(arr) | (arr < -_TOLERANCE) | (arr > 1.0 + _TOLERANCE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"reliability of sample {i} is {arr[i]!r}: reliabilities must be in [0, 1]")
    return np.clip(np.rint(arr * RESOLUTION), 0, RESOLUTION).astype(np.int64)


def threshold_units(h: float) -> int:
    """Threshold ``h`` in [0, 1] read as an exact decimal: integer multiples of 1e-9."""
    if not isinstance(h, (int, float)) or not math.isfinite(h) or not 0.0 <= h <= 1.0:
        raise ValueError(f"reliability threshold {h!r}: must be a number in [0, 1]")
    return int(round(float(h) * RESOLUTION))


def bin_edges(bins: int = BINS) -> np.ndarray:
    """The ``bins + 1`` edges k / bins of the histogram over (0, 1]."""
    return np.arange(bins + 1, dtype=np.float64) / bins


def reliability_histogram(values: Any, bins: int = BINS) -> np.ndarray:
    """Counts per bin over (0, 1]: bin k covers (k/bins, (k+1)/bins]; exact zeros are not counted (see
    ``summary_stats()['count_zero']``). Returns an int64 array of length ``bins``."""
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r}: must be a positive integer")
    q = quantize(values)
    positive = q[q > 0]
    index = (positive * bins + RESOLUTION - 1) // RESOLUTION - 1  # ceil(r * bins) - 1, in exact integers
    return np.bincount(index, minlength=bins).astype(np.int64)


def summary_stats(values: Any) -> Dict[str, Any]:
    """``n``, ``mean``, ``quantiles`` (0.1, 0.25, 0.5, 0.75, 0.9; linear interpolation), ``share_above_0_5``
    (reliability > 0.5), ``share_at_least_0_5`` (>= 0.5: the measurer's Acc@0.5 on these labels, =
    |percent(H, 0.5)| / n), ``count_zero`` (== 0, outside the histogram) and ``count_one`` (== 1)."""
    q = quantize(values)
    if q.size == 0:
        raise ValueError("summary_stats: no reliabilities given")
    r = q / RESOLUTION
    half = RESOLUTION // 2
    return {
        "n": int(q.size),
        "mean": float(r.mean()),
        "quantiles": {str(p): float(v) for p, v in zip(QUANTILES, np.quantile(r, QUANTILES))},
        "share_above_0_5": float((q > half).mean()),
        "share_at_least_0_5": float((q >= half).mean()),
        "count_zero": int((q == 0).sum()),
        "count_one": int((q == RESOLUTION).sum()),
    }


def percent(values: Any, h: float) -> np.ndarray:
    """percent(H, h): boolean mask of the samples whose reliability is in [h, 1.0] (inclusive at h)."""
    return quantize(values) >= threshold_units(h)


def percent_indices(values: Any, h: float) -> np.ndarray:
    """Split positions (ascending) of the samples in percent(H, h)."""
    return np.flatnonzero(percent(values, h))


def select(samples: Sequence[Any], reliabilities: Any, h: float) -> List[Any]:
    """percent(H, h) as samples: those with reliability in [h, 1.0], unchanged, in split order."""
    r = np.asarray(reliabilities, dtype=np.float64).reshape(-1)
    if len(samples) != r.size:
        raise ValueError(f"select: {len(samples)} samples but {r.size} reliabilities")
    return [samples[i] for i in percent_indices(r, h)]


def official_subset_masks(values: Any) -> Dict[str, np.ndarray]:
    """Masks of the official subsets by file suffix: ``refine_0_0`` .. ``refine_0_9`` (> t), ``refine_1_0``
    (== 1.0), ``bad_label_0_0`` (== 0) and ``bad_label_0_4`` (< 0.4)."""
    q = quantize(values)
    tenth = RESOLUTION // 10
    masks = {f"refine_0_{t}": q > t * tenth for t in range(10)}
    masks["refine_1_0"] = q == RESOLUTION
    masks["bad_label_0_0"] = q == 0
    masks["bad_label_0_4"] = q < 4 * tenth
    return masks


def _check_samples(samples: Sequence[Any], n: int, what: str) -> None:
    if len(samples) != n:
        raise ValueError(f"{what}: {len(samples)} samples but {n} reliabilities")
    for i, sample in enumerate(samples):
        if not isinstance(sample, (tuple, list)):
            raise ValueError(f"{what}: sample {i} is a {type(sample).__name__}, expected a split tuple")


def write_official_subsets(samples: Sequence[Any], reliabilities: Any, out_dir: str, dataset: str,
                           split: str = OFFICIAL_SPLIT) -> Dict[str, Dict[str, Any]]:
    """Write the official-compatible subsets ``{dataset}_{split}_refine_*.pth`` and the low-reliability lists
    ``{dataset}_{split}_bad_label_0_0.pth`` / ``_0_4.pth`` (see the module docstring), each a list of the input
    split's own tuples in split order. Returns ``{suffix: {"path", "count"}}``."""
    r = np.asarray(reliabilities, dtype=np.float64).reshape(-1)
    _check_samples(samples, r.size, f"{dataset}_{split}")
    out: Dict[str, Dict[str, Any]] = {}
    for suffix, mask in official_subset_masks(r).items():
        subset = [samples[i] for i in np.flatnonzero(mask)]
        path = os.path.join(out_dir, f"{dataset}_{split}_{suffix}.pth")
        atomic_torch_save(subset, path)
        out[suffix] = {"path": path, "count": len(subset)}
    return out


def _png_bytes(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def _draw_histogram(ax: Any, counts: np.ndarray, title: str) -> None:
    counts = np.asarray(counts)
    edges = bin_edges(counts.size)
    ax.stairs(counts, edges, fill=True, color="#3b6fb6")  # one patch: adjacent bars of width 1/bins
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("reliability")
    ax.set_ylabel("number of samples")
    ax.set_title(title, fontsize=10)


def plot_histogram(counts: Any, path: str, title: str) -> str:
    """Bar histogram over (0, 1] (one bar per bin, the paper's Fig. 5 style) written atomically as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    _draw_histogram(fig.add_subplot(1, 1, 1), np.asarray(counts), title)
    fig.tight_layout()
    return atomic_write_bytes(path, _png_bytes(fig))


def plot_histogram_grid(grid: Dict[str, Dict[str, Any]], measurers: Sequence[str], sources: Sequence[str],
                        path: str, title: str) -> str:
    """Fig. 5-style matrix of histograms: row i = measurer, column j = scored source; ``grid[i][j]`` holds the
    counts (missing cells are left empty). Diagonal cells are source-specific (SR), the rest cross-source (CR)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * len(sources), 2.8 * len(measurers)))
    axes = fig.subplots(len(measurers), len(sources), squeeze=False)
    for a, i in enumerate(measurers):
        for b, j in enumerate(sources):
            counts = grid.get(i, {}).get(j)
            if counts is None:
                axes[a][b].set_axis_off()
                continue
            kind = "SR" if i == j else "CR"
            _draw_histogram(axes[a][b], np.asarray(counts), f"{kind}: measurer {i} on {j}")
    fig.suptitle(title)
    fig.tight_layout()
    return atomic_write_bytes(path, _png_bytes(fig))


def load_reliabilities(predictions_jsonl: str, samples: Optional[Sequence[Any]] = None) -> np.ndarray:
    """Reliabilities (the ``iou`` field) of a per-sample predictions file, in split order.

    Every line must be an object whose ``index`` equals its position; with ``samples`` the count must match and
    each row's ``image`` must name the same file as the sample's first field."""
    values: List[float] = []
    with open(predictions_jsonl) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{predictions_jsonl} line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "iou" not in row:
                raise InputError(f"{where}: expected an object with an 'iou' field")
            position = len(values)
            if row.get("index", position) != position:
                raise InputError(f"{where}: index {row.get('index')!r}, expected {position} (rows must be one "
                                 "per sample, in split order)")
            if samples is not None and position < len(samples) and "image" in row:
                expected = samples[position][0] if isinstance(samples[position], (tuple, list)) else None
                if isinstance(expected, str) and os.path.basename(str(row["image"])) != os.path.basename(expected):
                    raise InputError(f"{where}: image {row['image']!r} but split sample {position} is "
                                     f"{expected!r}: the predictions belong to another split")
            try:
                values.append(float(row["iou"]))
            except (TypeError, ValueError):
                raise InputError(f"{where}: iou {row['iou']!r} is not a number") from None
    if samples is not None and len(values) != len(samples):
        raise InputError(f"{predictions_jsonl}: {len(values)} rows but the split has {len(samples)} samples")
    r = np.asarray(values, dtype=np.float64)
    try:
        quantize(r)
    except ValueError as exc:
        raise InputError(f"{predictions_jsonl}: {exc}") from None
    return r


def write_scoring_outputs(predictions_jsonl: str, samples: Sequence[Any], out_dir: str, dataset: str, split: str,
                          tb_writer: Any = None, bins: int = BINS) -> Dict[str, Any]:
    """Everything the reliability script writes besides the per-sample file, under ``out_dir``:

    ``{dataset}_{split}_reliability_histogram.json`` (counts per bin, edges convention, zero count),
    ``{dataset}_{split}_reliability_histogram.png``, ``{dataset}_{split}_reliability_summary.json``, the official
    subsets and low-reliability lists, and (with a ``SummaryWriter``) the TensorBoard histogram
    ``reliability/{dataset}_{split}`` with exact buckets [0] + the bins. Returns the summary (JSON-able)."""
    r = load_reliabilities(predictions_jsonl, samples)
    stem = os.path.join(out_dir, f"{dataset}_{split}_reliability")
    counts = reliability_histogram(r, bins)
    stats = summary_stats(r)
    write_json(f"{stem}_histogram.json", {
        "dataset": dataset, "split": split, "bins": bins,
        "convention": f"bin k covers (k/{bins}, (k+1)/{bins}]; reliability 0 is counted in count_zero only",
        "count_zero": stats["count_zero"], "n": stats["n"], "counts": counts.tolist()})
    plot_histogram(counts, f"{stem}_histogram.png", f"{dataset} {split}: reliability over (0, 1], {bins} bins "
                                                    f"(n={stats['n']}, zeros={stats['count_zero']})")
    if tb_writer is not None:
        q = quantize(r) / RESOLUTION
        tb_writer.add_histogram_raw(
            f"reliability/{dataset}_{split}", min=float(q.min()), max=float(q.max()), num=int(q.size),
            sum=float(q.sum()), sum_squares=float((q * q).sum()), bucket_limits=bin_edges(bins).tolist(),
            bucket_counts=[stats["count_zero"]] + counts.tolist(), global_step=0)
        tb_writer.flush()
    subsets = write_official_subsets(samples, r, out_dir, dataset, split)
    summary = {"dataset": dataset, "split": split, **stats, "predictions": predictions_jsonl,
               "histogram_json": f"{stem}_histogram.json", "histogram_png": f"{stem}_histogram.png",
               "subsets": subsets}
    write_json(f"{stem}_summary.json", summary)
    return summary
