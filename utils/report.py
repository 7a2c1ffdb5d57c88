"""Evaluation reports: grounding metrics by threshold, expression length and spatial words, and the report files.

``grounding_metrics(ious, queries)`` computes every number of the report from per-sample IoUs and expressions
(pure Python, so it is the same on any number of processes once the predictions are gathered).
``write_report(out_dir, ...)`` writes ``report.json`` (the numbers and the gallery's samples), ``report.md`` (with
its pictures as PNG files beside it) and a self-contained ``report.html`` (the same pictures embedded as base64 PNG):
the tables, a histogram of the scores and a gallery of the worst and best samples, each drawn with its target box
(green) and predicted box (red), its expression and its score. docs/visualization.md describes the rules.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from utils.io import atomic_write_bytes, atomic_write_text, write_json

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
"""Accuracy@t: the share of samples whose IoU with the target is at least t (0.5 is the paper's metric)."""

LENGTH_BUCKETS = (("1-2", 1, 2), ("3-4", 3, 4), ("5-7", 5, 7), ("8+", 8, None))
"""Expression length buckets in words (an expression with no word at all counts as 1-2)."""

SPATIAL_WORDS = frozenset({
    # the official transform's direction words (datasets/transforms.py DIRECTION_WORDS)
    "left", "right", "top", "bottom", "middle",
    # their usual companions and derived forms
    "leftmost", "rightmost", "topmost", "bottommost", "upper", "lower", "front", "behind", "near", "nearest",
    "nearer", "closer", "closest", "farther", "farthest", "furthest", "above", "below", "beside", "between",
    "under", "underneath", "beneath", "over", "center", "centre", "central"})
"""Whole words that make an expression spatial (see ``is_spatial``)."""

SPATIAL_PHRASES = (("next", "to"), ("close", "to"), ("far", "from"))
"""Two-word phrases that make an expression spatial (their words alone do not: "the next one", "close up")."""

WORD = re.compile(r"[a-z0-9]+")
"""A word: a maximal run of ASCII letters and digits in the lower-cased expression."""

TARGET_COLOUR = (40, 200, 60)
PREDICTION_COLOUR = (235, 40, 40)


def words(query: str) -> List[str]:
    """The expression's words: maximal runs of ``[a-z0-9]`` in the lower-cased text ("man's" -> "man", "s")."""
    return WORD.findall(query.lower())


def length_bucket(query: str) -> str:
    """The length bucket ("1-2", "3-4", "5-7" or "8+") of the expression's word count."""
    n = len(words(query))
    for name, _, high in LENGTH_BUCKETS:
        if high is None or n <= high:
            return name
    raise AssertionError("unreachable: the last bucket is open")


def is_spatial(query: str) -> bool:
    """Whether the expression uses a spatial word: one of its ``words`` is in ``SPATIAL_WORDS`` or two consecutive
    words form one of ``SPATIAL_PHRASES`` (whole words only: "leftover" and "topping" are not spatial)."""
    tokens = words(query)
    return any(t in SPATIAL_WORDS for t in tokens) or any(pair in SPATIAL_PHRASES for pair in zip(tokens, tokens[1:]))


def _accuracy(ious: Sequence[float], threshold: float) -> float:
    return sum(1 for v in ious if v >= threshold) / len(ious) if ious else 0.0


def grounding_metrics(ious: Sequence[float], queries: Sequence[str]) -> Dict[str, Any]:
    """Every number of the report from per-sample IoUs and their expressions (same order, same length):

    ``{"samples", "accuracy@0.5", ..., "accuracy@0.9", "miou", "by_length": {bucket: {"samples", "accuracy@0.5"}},
    "by_spatial": {"spatial" | "non-spatial": {"samples", "accuracy@0.5"}}}``. Empty groups report 0 samples and
    accuracy 0."""
    if len(ious) != len(queries):
        raise ValueError(f"{len(ious)} IoUs but {len(queries)} expressions")
    ious = [float(v) for v in ious]
    out: Dict[str, Any] = {"samples": len(ious)}
    out.update({f"accuracy@{t:g}": _accuracy(ious, t) for t in THRESHOLDS})
    out["miou"] = sum(ious) / len(ious) if ious else 0.0

    def group(keys: List[str], names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        members = {name: [v for v, k in zip(ious, keys) if k == name] for name in names}
        return {name: {"samples": len(m), "accuracy@0.5": _accuracy(m, 0.5)} for name, m in members.items()}

    out["by_length"] = group([length_bucket(q) for q in queries], [b[0] for b in LENGTH_BUCKETS])
    out["by_spatial"] = group(["spatial" if is_spatial(q) else "non-spatial" for q in queries],
                              ["spatial", "non-spatial"])
    return out


@dataclass(frozen=True)
class GalleryItem:
    """One sample of a gallery: its image file, expression, boxes in original pixels and score."""

    index: int
    image: str
    query: str
    target_xyxy: Sequence[float]
    pred_xyxy: Sequence[float]
    score: float


def extremes(items: Sequence[GalleryItem], count: int) -> Tuple[List[GalleryItem], List[GalleryItem]]:
    """The ``count`` lowest-scoring items (lowest first) and the ``count`` highest (highest first); ties by index."""
    ranked = sorted(items, key=lambda it: (it.score, it.index))
    best = sorted(items, key=lambda it: (-it.score, it.index))
    return ranked[:count], best[:count]


def draw_sample(item: GalleryItem, max_side: int = 192) -> Image.Image:
    """The item's image scaled so its long side is ``max_side`` pixels, with its target (green) and prediction
    (red)."""
    with Image.open(item.image) as img:
        canvas = img.convert("RGB")
    scale = max_side / max(canvas.size)
    canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))),
                           Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for box, colour in ((item.target_xyxy, TARGET_COLOUR), (item.pred_xyxy, PREDICTION_COLOUR)):
        draw.rectangle([float(v) * scale for v in box], outline=colour, width=2)
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as an optimised PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def histogram_png(values: Sequence[float], label: str, bins: int = 20) -> bytes:
    """A matplotlib histogram of ``values`` over [0, 1] in ``bins`` bins, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 2.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist([float(v) for v in values], bins=bins, range=(0.0, 1.0), color="#3b6fb6", edgecolor="white")
    ax.set_xlabel(label)
    ax.set_ylabel("samples")
    ax.set_xlim(0.0, 1.0)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def metric_tables(metrics: Dict[str, Any]) -> List[Tuple[str, List[str], List[List[str]]]]:
    """``grounding_metrics``' numbers as (title, header, rows) tables, accuracies in percent."""
    def pct(value: float) -> str:
        return f"{100 * value:.2f}"

    overall = [[str(metrics["samples"]), *[pct(metrics[f"accuracy@{t:g}"]) for t in THRESHOLDS],
                pct(metrics["miou"])]]
    length = [[name, str(g["samples"]), pct(g["accuracy@0.5"])] for name, g in metrics["by_length"].items()]
    spatial = [[name, str(g["samples"]), pct(g["accuracy@0.5"])] for name, g in metrics["by_spatial"].items()]
    return [("Overall", ["samples", *[f"Acc@{t:g}" for t in THRESHOLDS], "mIoU"], overall),
            ("Acc@0.5 by expression length (words)", ["words", "samples", "Acc@0.5"], length),
            ("Acc@0.5 by spatial words", ["expression", "samples", "Acc@0.5"], spatial)]


def _markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _html_table(header: List[str], rows: List[List[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_report(out_dir: str, title: str, tables: List[Tuple[str, List[str], List[List[str]]]],
                 scores: Sequence[float], score_name: str, galleries: List[Tuple[str, List[GalleryItem]]],
                 numbers: Optional[Dict[str, Any]] = None, notes: Sequence[str] = ()) -> Dict[str, str]:
    """Write ``report.json`` / ``report.md`` (pictures under ``report_files/``) / ``report.html`` (self-contained)
    under ``out_dir``; returns their paths. ``tables``: (title, header, rows); ``scores``: the histogram's values;
    ``galleries``: (title, items) drawn in order; ``numbers``: extra JSON content (e.g. the metrics)."""
    files_dir = os.path.join(out_dir, "report_files")
    histogram = histogram_png(scores, score_name)
    atomic_write_bytes(os.path.join(files_dir, "histogram.png"), histogram, durable=False)
    md = [f"# {title}\n", *[f"{n}\n" for n in notes]]
    body = [f"<h1>{html.escape(title)}</h1>", *[f"<p>{html.escape(n)}</p>" for n in notes]]
    for name, header, rows in tables:
        md += [f"## {name}\n", _markdown_table(header, rows), ""]
        body += [f"<h2>{html.escape(name)}</h2>", _html_table(header, rows)]
    md += [f"## Histogram of {score_name}\n", "![histogram](report_files/histogram.png)\n"]
    body += [f"<h2>Histogram of {html.escape(score_name)}</h2>", f'<img alt="histogram" src="{_data_uri(histogram)}">']
    legend = "green: target box, red: predicted box"
    gallery_json = {}
    for g, (name, items) in enumerate(galleries):
        md += [f"## {name}\n", f"{legend}.\n"]
        body += [f"<h2>{html.escape(name)}</h2>", f"<p>{legend}</p>", '<div class="gallery">']
        for k, item in enumerate(items):
            png = png_bytes(draw_sample(item))
            rel = f"report_files/gallery{g}_{k:02d}.png"
            atomic_write_bytes(os.path.join(out_dir, rel), png, durable=False)
            caption = f"#{item.index} \"{item.query}\" {score_name} {item.score:.3f}"
            md.append(f"- ![{item.index}]({rel}) {caption.replace('|', '/')}")
            body.append(f'<figure><img alt="sample {item.index}" src="{_data_uri(png)}"><figcaption>'
                        f"{html.escape(caption)}</figcaption></figure>")
        md.append("")
        body.append("</div>")
        gallery_json[name] = [{"index": it.index, "image": it.image, "query": it.query, "score": it.score}
                              for it in items]
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}.gallery{display:flex;flex-wrap:wrap}"
             "figure{margin:.4em;width:200px;font-size:.8em}figure img{display:block}")
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    paths = {"json": os.path.join(out_dir, "report.json"), "md": os.path.join(out_dir, "report.md"),
             "html": os.path.join(out_dir, "report.html")}
    write_json(paths["json"], {"title": title, **(numbers or {}), "galleries": gallery_json})
    atomic_write_text(paths["md"], "\n".join(md) + "\n")
    atomic_write_text(paths["html"], page)
    return paths


def gallery_items(rows: Sequence[Dict[str, Any]], image_path: Any, score_key: str = "iou") -> List[GalleryItem]:
    """``GalleryItem``s from ``engine.prediction_rows``-style rows; ``image_path(row)`` gives each image file."""
    return [GalleryItem(index=int(r["index"]), image=image_path(r), query=str(r["query"]),
                        target_xyxy=r["target_xyxy"], pred_xyxy=r["pred_xyxy"], score=float(r[score_key]))
            for r in rows]
