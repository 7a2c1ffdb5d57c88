"""Ground a referring expression in an image with a CLIP-VG checkpoint.

    python inference.py --eval_model CKPT --image IMG --query "the red circle on the left" [--out VIS.png]
    python inference.py --eval_model CKPT --batch_file items.json      # [{"image", "query"[, "out"]}, ...]
    python inference.py --eval_model CKPT --image IMG --query "..." --attention ATT.png [--attention_layer N]

Prints one JSON line per query with the box in original-image pixels (x1, y1, x2, y2); ``--out`` draws it.
``--attention`` draws where the [REG] token looked in a fusion layer (``models/attention.py``), captured from the
same forward pass that gives the box. Runs on the CPU or a GPU (``--device``). ``app.py`` serves the same path
as a web page.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from dataclasses import dataclass
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from clip.clip import _tokenizer as clip_tokenizer  # the tokenizer clip.tokenize (tokenize_queries) uses
from PIL import Image, ImageDraw

from datasets.grounding import load_image, tokenize_queries
from datasets.transforms import EvalTransform, canvas_to_original
from engine import autocast
from models import build_model_from_checkpoint
from models.attention import RegAttention, word_weights
from utils.attention_plot import attention_png
from utils.args import parse_args
from utils.box_ops import cxcywh_to_xyxy
from utils.checkpoint import load_checkpoint, load_model_state
from utils.cli import run_cli
from utils.errors import InputError, UsageError
from utils.io import atomic_write_bytes, check_writable_file
from utils.misc import resolve_device
from utils.prompt import apply_prompt, check_prompt
from utils.run_setup import adopt_checkpoint_settings, resolve_checkpoint_path


def image_format(path: str) -> str:
    """The PIL format for a picture file name (by its extension); ``InputError`` naming it when unknown."""
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise InputError(f"{path}: unknown picture file extension; use e.g. .png or .jpg")
    return fmt


def _check_out(path: Optional[str], flag: str) -> None:
    if path:
        try:
            image_format(path)
        except InputError as exc:
            raise UsageError(f"{flag} {exc}") from None
        check_writable_file(path, flag)


def _query_problem(query: Any) -> Optional[str]:
    """Why ``query`` cannot be grounded (not a string, empty, only whitespace), or None."""
    if not isinstance(query, str):
        return f"'query' must be a string, got {type(query).__name__} {query!r}"
    if not query.strip():
        return f"'query' {query!r} is empty or only whitespace"
    return None


def load_items(args: argparse.Namespace) -> Tuple[List[Dict[str, str]], List[str]]:
    """The (image, query[, out]) items of one run, from --image/--query or --batch_file, and one line per batch item
    whose query cannot be grounded (those items are left out; the others are still answered). Anything else wrong
    (the batch file, an item's image or out, the single --image/--query) raises ``InputError``/``UsageError``
    naming the flag (and the item) at fault, before any model is loaded."""
    if args.batch_file:
        where = f"--batch_file {args.batch_file}"
        try:
            with open(args.batch_file) as fh:
                items = json.load(fh)
        except OSError as exc:
            raise InputError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc})") from None
        if args.attention:
            raise UsageError("--attention draws one image: use it with --image and --query, not --batch_file")
        if not isinstance(items, list) or not items:
            raise InputError(f"{where}: expected a non-empty JSON list of {{image, query}} objects")
        kept, skipped = [], []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not item.get("image") or "query" not in item:
                raise InputError(f"{where}: item {i} needs a non-empty 'image' and a 'query'")
            if not os.path.isfile(item["image"]):
                raise InputError(f"{where}: item {i}: image {item['image']} does not exist")
            _check_out(item.get("out"), f"{where}: item {i}: out")
            problem = _query_problem(item["query"])
            if problem:
                skipped.append(f"{where}: item {i}: {problem}")
            else:
                kept.append(item)
        if not kept:
            raise InputError(f"{where}: no item can be answered ({skipped[0]}{' ...' if len(skipped) > 1 else ''})")
        return kept, skipped
    if not args.image or not args.query:
        raise UsageError("give --image and --query (or --batch_file)")
    problem = _query_problem(args.query)
    if problem:
        raise UsageError(f"--query: {problem.split(' ', 1)[1]}")
    if os.path.isdir(args.image):
        raise InputError(f"--image {args.image}: is a directory, not an image file")
    if not os.path.isfile(args.image):
        raise InputError(f"--image {args.image}: no such image file")
    _check_out(args.out, "--out")
    if args.attention:
        check_writable_file(args.attention, "--attention")
    if args.attention and os.path.splitext(args.attention)[1].lower() != ".png":
        raise UsageError(f"--attention {args.attention}: the attention picture is a PNG; name it *.png")
    return [{"image": args.image, "query": args.query, "out": args.out}], []


def draw_box(image: Image.Image, box: Sequence[float], query: str, path: str) -> None:
    """Save ``image`` with ``box`` and the query drawn on it (atomically)."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 200))
    draw.rectangle([float(v) for v in box], outline=(255, 40, 40), width=width)
    draw.text((float(box[0]) + width, max(float(box[1]) - 12, 0)), query, fill=(255, 40, 40))
    buf = io.BytesIO()
    canvas.save(buf, format=image_format(path))
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Grounding:
    """One image's prediction: the box in original pixels and, when asked for, [REG]'s attention."""

    box_xyxy: List[float]
    attention_png: Optional[bytes] = None


@torch.no_grad()
def ground_images(model: torch.nn.Module, images: List[Image.Image], queries: List[str], args: argparse.Namespace,
                  device: torch.device, attention_layer: Optional[int] = None) -> List[Grounding]:
    """Predict a box for every (image, query) pair in one batch; with ``attention_layer``, also draw [REG]'s
    attention in that fusion layer, recorded from this same forward pass (the boxes do not change)."""
    transform = EvalTransform(args.imsize)
    samples = [transform(img, torch.zeros(4)) for img in images]
    texts = [apply_prompt(query, args.prompt) for query in queries]
    tokens, rows, _ = tokenize_queries(texts, args.max_query_len)
    img = torch.stack([s.img for s in samples]).to(device)
    mask = torch.stack([s.mask for s in samples]).to(device)
    text = tokens[rows].to(torch.int64).to(device)
    recorder = RegAttention(model, attention_layer) if attention_layer is not None else None
    with recorder or contextlib.nullcontext(), autocast(device, args.amp):
        pred = model(img, mask, text).float().cpu()
    canvas = cxcywh_to_xyxy(pred).clamp(0, 1) * args.imsize
    boxes = canvas_to_original(canvas, torch.stack([s.transform for s in samples]))
    results = []
    for i, (image, box) in enumerate(zip(images, boxes)):
        w, h = image.size
        box = torch.stack([box[0].clamp(0, w), box[1].clamp(0, h), box[2].clamp(0, w), box[3].clamp(0, h)])
        result = Grounding([round(float(v), 2) for v in box])
        if recorder is not None:
            weights = recorder.maps[-1]
            layer = attention_layer % len(model.vl_transformer.encoder.layers)
            words = word_weights(text[i].tolist(), weights.text[i].tolist(), clip_tokenizer)
            result.attention_png = attention_png(image, result.box_xyxy, queries[i], weights.patches[i], words,
                                                 samples[i].transform, args.imsize, f"layer {layer}")
        results.append(result)
    return results


def ground(model: torch.nn.Module, items: List[Dict[str, str]], args: argparse.Namespace,
           device: torch.device) -> List[Dict[str, Any]]:
    """Predict a box for every item, in batches of ``--batch_size``; ``--attention`` draws the (single) item's."""
    attention_layer = args.attention_layer if args.attention else None
    results = []
    for start in range(0, len(items), args.batch_size):
        chunk = items[start:start + args.batch_size]
        images = [load_image(item["image"], start + i) for i, item in enumerate(chunk)]
        groundings = ground_images(model, images, [item["query"] for item in chunk], args, device, attention_layer)
        for item, image, grounding in zip(chunk, images, groundings):
            row = {"image": item["image"], "query": item["query"], "box_xyxy": grounding.box_xyxy}
            if item.get("out"):
                draw_box(image, row["box_xyxy"], item["query"], item["out"])
                row["out"] = item["out"]
            if grounding.attention_png is not None:
                atomic_write_bytes(args.attention, grounding.attention_png)
                row["attention"] = args.attention
            results.append(row)
    return results


def load_model(args: argparse.Namespace) -> Tuple[torch.nn.Module, torch.device]:
    """The ``--eval_model`` checkpoint's model in eval mode on ``--device`` (its settings adopted into ``args``)."""
    if not args.eval_model:
        raise UsageError("--eval_model is required: the checkpoint to ground with")
    checkpoint_path = resolve_checkpoint_path(args.eval_model, args.output_dir, "--eval_model")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(checkpoint_path)
    adopt_checkpoint_settings(args, ckpt)
    check_prompt(args.prompt)
    model = build_model_from_checkpoint(ckpt, args)
    load_model_state(model, ckpt)
    model.to(device).eval()
    if args.attention_layer is not None:
        RegAttention(model, args.attention_layer)  # a bad --attention_layer is named before any work
    return model, device


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Entry point; ``argv`` like ``sys.argv[1:]``."""
    args = parse_args("inference", argv)
    check_prompt(args.prompt)
    items, skipped = load_items(args)
    model, device = load_model(args)
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr, flush=True)
    results = ground(model, items, args, device)
    for row in results:
        print(json.dumps(row))
    if skipped:
        raise InputError(f"{len(skipped)} of {len(items) + len(skipped)} batch items not answered (their queries "
                         f"cannot be grounded; first: {skipped[0]})")
    return results


if __name__ == "__main__":
    run_cli(main)
