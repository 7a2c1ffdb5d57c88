"""Helpers shared by the benchmark scripts: threads, timing, peak memory, the run environment, realistic synthetic
batches, and the one-JSON-object output."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import clip
import torch
from torch import nn

from datasets.records import load_split_file, split_path
from demo.synthetic import DATASET, SyntheticConfig, generate
from models import build_model
from models.clip_backbone import CLIP_ARCHS, RANDOM_PREFIX
from utils.args import parse_args
from utils.io import atomic_torch_save

QUERIES: Tuple[str, ...] = (
    "man on the left", "red car", "the woman in a white shirt", "left zebra", "bowl of rice on the right",
    "guy in black jacket holding an umbrella", "middle donut", "the tallest giraffe", "blue chair in front",
    "person sitting on the bench next to the dog", "bottom right sandwich", "elephant", "kid with a red hat",
    "white plate with food on top", "the bus behind the car", "second horse from the right",
)
"""RefCOCO-style expressions (3 to 12 BPE tokens, start and end included); batches draw from these, so the text
tower's trimmed length is what real data gives, not the 77-token worst case."""

COCO_SIZES: Tuple[Tuple[int, int], ...] = (
    (640, 480), (640, 427), (480, 640), (640, 480), (640, 425), (427, 640), (640, 480), (500, 375), (640, 360),
    (640, 480), (640, 427), (480, 640), (640, 480), (640, 428), (375, 500), (640, 480), (640, 426), (640, 640),
    (640, 480), (612, 612),
)
"""(width, height) of COCO-like images, roughly in COCO train2014's proportions (mostly 4:3 and 3:2 landscape,
a fifth portrait, one in ten square); they set the padding masks of synthetic batches and the JPEG sizes of the
data benchmark."""


PERFORMANCE_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GLIBC_TUNABLES", "LD_PRELOAD", "OMP_WAIT_POLICY")
"""Environment variables that change CPU throughput; reports list the ones set (and every ``MALLOC_*``)."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def set_threads(threads: Optional[int]) -> int:
    """Use ``threads`` intra-op CPU threads when given; returns the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def resolve_device(name: Optional[str]) -> torch.device:
    """``--device`` (default: cuda when available, else cpu); ``SystemExit`` naming the flag when unusable."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh CUDA peak-memory window (the CPU figure is the process's peak RSS, which cannot reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> Dict[str, Any]:
    """``peak_memory_mb`` and what it measures: CUDA ``max_memory_allocated`` since the last reset, or the peak
    resident set size of this process on the CPU."""
    if device.type == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1),
                "peak_memory_kind": "cuda_max_memory_allocated"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"peak_memory_mb": round(rss_kb / 1024, 1), "peak_memory_kind": "process_peak_rss"}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn()`` takes, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def rate_summary(rates: Sequence[float]) -> Dict[str, Any]:
    """Median, best and every run of a list of samples/s figures (rounded for reading)."""
    return {"median": round(statistics.median(rates), 4), "best": round(max(rates), 4),
            "runs": [round(r, 4) for r in rates]}


def environment(device: torch.device) -> Dict[str, Any]:
    """Versions, machine and load: what a reader needs to compare two reports."""
    info: Dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                            "env": {k: v for k, v in sorted(os.environ.items()) if k in PERFORMANCE_ENV
                                    or k.startswith("MALLOC_")}}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = cpu_model_name() or platform.processor() or platform.machine()
    info["cpu"] = {"model": cpu_model_name(), "capability": torch.backends.cpu.get_cpu_capability(),
                   "amx_bf16": torch.cpu._is_amx_tile_supported(),
                   "avx512_bf16": torch.cpu._is_avx512_bf16_supported()}
    return info


def cpu_model_name() -> str:
    """The CPU's model name as the OS reports it (Linux ``/proc/cpuinfo``), or "" where it does not."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def shared_args(argv: Sequence[str], script: str = "train") -> argparse.Namespace:
    """The project's parsed arguments for ``argv`` (no-op flag warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse_args(script, list(argv))


def model_spec(model: str, random_weights: bool) -> str:
    """``--model`` of a benchmark -> the project's spec: ``random:<name>`` with ``--random_weights`` or for a
    configuration that only exists with random weights (``tiny``); anything else unchanged."""
    if model.startswith(RANDOM_PREFIX):
        return model
    if random_weights or (model in CLIP_ARCHS and model not in clip.available_models()):
        return RANDOM_PREFIX + model
    return model


def batch_padding(imsize: int, size: Tuple[int, int]) -> Tuple[int, int, int, int, float]:
    """(top, left, height, width, scale) of an image of ``size`` (w, h) resized to long side ``imsize`` and
    centred on the canvas, as the eval transform places it."""
    w, h = size
    scale = imsize / max(w, h)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = round((imsize - nh) / 2.0 - 0.1), round((imsize - nw) / 2.0 - 0.1)
    return top, left, nh, nw, scale


def synthetic_batch(batch_size: int, imsize: int, max_query_len: int, generator: torch.Generator,
                    start_index: int = 0) -> Dict[str, torch.Tensor]:
    """A collated batch shaped like ``GroundingDataset``'s (img, img_mask, text, box, index, transform): random
    normalised pixels inside COCO-shaped image areas, zero padding around them, RefCOCO-style queries."""
    img = torch.zeros(batch_size, 3, imsize, imsize)
    mask = torch.ones(batch_size, imsize, imsize, dtype=torch.bool)
    transform = torch.zeros(batch_size, 4)
    picks = torch.randint(len(QUERIES), (batch_size,), generator=generator).tolist()
    sizes = torch.randint(len(COCO_SIZES), (batch_size,), generator=generator).tolist()
    for i, s in enumerate(sizes):
        top, left, h, w, scale = batch_padding(imsize, COCO_SIZES[s])
        img[i, :, top:top + h, left:left + w] = torch.randn(3, h, w, generator=generator)
        mask[i, top:top + h, left:left + w] = False
        transform[i] = torch.tensor([scale, left, top, 0.0])
    centre = 0.3 + 0.4 * torch.rand(batch_size, 2, generator=generator)
    extent = 0.1 + 0.3 * torch.rand(batch_size, 2, generator=generator)
    text = clip.tokenize([QUERIES[p] for p in picks], context_length=max_query_len, truncate=True).long()
    return {"img": img, "img_mask": mask, "text": text, "box": torch.cat([centre, extent], dim=1),
            "index": torch.arange(start_index, start_index + batch_size), "transform": transform}


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    """Every tensor of ``batch`` on ``device`` (asynchronous copies from pinned memory, as the engine makes)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def build_benchmark_model(project_args: argparse.Namespace) -> nn.Module:
    """``build_model(project_args)``; a ``--model`` that cannot be built exits with the message naming it."""
    try:
        return build_model(project_args)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(str(exc)) from exc


def synthetic_world(work_dir: str, seed: int, image_size: int, split: str, samples: int, target_split: str,
                    flags: str) -> Dict[str, str]:
    """Generate (or reuse) the synthetic world under ``work_dir`` with just enough ``split`` images for
    ``samples`` samples (one image for each other split, no pretraining corpus) and write the first ``samples``
    of ``split`` as ``target_split``; ``flags`` name the options at fault if the world falls short. Returns
    ``{"data_root", "split_root"}``."""
    counts = {f"n_{name}_images": 1 for name in ("train", "val", "testA", "testB")}
    counts[f"n_{split}_images"] = math.ceil(samples / SyntheticConfig.expressions_per_image)
    data_root, split_root = os.path.join(work_dir, "data"), os.path.join(work_dir, "splits")
    generate(data_root, split_root, SyntheticConfig(seed=seed, image_size=image_size, n_pretrain=0, **counts))
    records = load_split_file(split_path(split_root, DATASET, split))
    if len(records) < samples:
        raise SystemExit(f"{flags}: the synthetic world has only {len(records)} {split} samples")
    atomic_torch_save(records[:samples], split_path(split_root, DATASET, target_split))
    return {"data_root": data_root, "split_root": split_root}


def emit_from_work_dir(run: Callable[[Any, str], Dict[str, Any]], args: Any, prefix: str) -> Dict[str, Any]:
    """``emit(run(args, work_dir))`` with ``work_dir`` = ``args.work_dir`` when given (kept), else a temporary
    folder named ``prefix...`` (removed afterwards)."""
    if args.work_dir:
        return emit(run(args, args.work_dir))
    with tempfile.TemporaryDirectory(prefix=prefix) as work_dir:
        return emit(run(args, work_dir))


def last_json_object(text: str) -> Optional[Dict[str, Any]]:
    """The last line of ``text`` that parses as a JSON object (the scripts print their results last), or None."""
    for line in reversed(text.strip().splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return None


def emit(result: Dict[str, Any]) -> Dict[str, Any]:
    """Print ``result`` as one JSON object on one line of stdout (progress bars go to stderr); returns it."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return result
