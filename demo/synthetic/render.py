"""Rendering a synthetic scene: a textured background, the shapes drawn at twice the size and box-downsampled,
optionally each class filled with its own texture."""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from demo.synthetic.config import CLASSES, COLOURS
from demo.synthetic.scenes import Scene, SceneObject, shape_outline


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A muted textured background: a colour ramp plus stripes, smooth blotches or blocky grain, plus noise."""
    c = np.arange(side, dtype=np.float32) / side
    base = (rng.uniform(85.0, 165.0) + rng.normal(0.0, 12.0, 3)).astype(np.float32)
    theta = rng.uniform(0.0, 2 * math.pi)
    amp = rng.uniform(10.0, 35.0)
    ramp = amp * ((c[None, :] - 0.5) * math.cos(theta) + (c[:, None] - 0.5) * math.sin(theta))
    texture = int(rng.integers(3))
    weights = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    if texture == 0:  # stripes
        a, freq, phase = rng.uniform(0.0, math.pi), rng.uniform(3.0, 10.0), rng.uniform(0.0, 2 * math.pi)
        pattern = np.sin(2 * math.pi * freq * (c[None, :] * math.cos(a) + c[:, None] * math.sin(a)) + phase)
        strength = rng.uniform(6.0, 18.0)
    else:  # smooth blotches (texture 1) or blocky grain (texture 2)
        cells = int(rng.integers(4, 9)) if texture == 1 else side // 8
        grid = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
        resample = Image.BICUBIC if texture == 1 else Image.NEAREST
        pattern = np.asarray(Image.fromarray(grid).resize((side, side), resample))
        strength = rng.uniform(8.0, 20.0)
    img = base + ramp[..., None] + (strength * pattern)[..., None] * weights
    img += (10.0 * rng.random((side, side), dtype=np.float32) - 5.0)[..., None]  # sensor grain
    return np.clip(img, 0, 255).astype(np.uint8)


TEXTURE_PERIOD = 6
"""Period in pixels of the class textures at the drawing scale (3 pixels in the image)."""
_TEXTURE_DARKEN = 0.45


@functools.lru_cache(maxsize=8)
def _textures(side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    half, p = TEXTURE_PERIOD // 2, TEXTURE_PERIOD
    patterns = [
        np.ones((side, side), dtype=bool),
        (y // half) % 2 == 0,
        (x // half) % 2 == 0,
        ((x + y) // half) % 2 == 0,
        ((x // half) + (y // half)) % 2 == 0,
        ~((x % p < half) & (y % p < half)),
        ((x - y) // half) % 2 == 0,
        (x % p >= 2) & (y % p >= 2),
    ]
    stacked = np.stack(patterns)
    stacked.flags.writeable = False
    return stacked


def class_texture(category: str, side: int) -> np.ndarray:
    """(side, side) bool mask (read-only) of the pixels a shape of ``category`` keeps at full brightness (the others
    are darkened): one pattern per class in :data:`CLASSES` order: solid, horizontal stripes, vertical stripes,
    diagonal stripes, checks, dots, anti-diagonal stripes, grid."""
    return _textures(side)[CLASSES.index(category)]


def _draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, scale: int, fill: Any, edge: Any) -> None:
    kind, geo = shape_outline(obj.category, obj.pose)
    if kind == "polygon":
        draw.polygon([(x * scale, y * scale) for x, y in geo], fill=fill, outline=edge, width=2)
    elif kind == "chord":
        bbox, start, end = geo
        draw.chord([v * scale for v in bbox], start, end, fill=fill, outline=edge, width=2)
    elif kind == "ring":
        draw.ellipse([v * scale for v in geo], outline=fill, width=max(3, round(obj.pose.extent * 0.22 * scale)))
    else:
        draw.ellipse([v * scale for v in geo], fill=fill, outline=edge, width=2)


def render_scene(scene: Scene, rng: np.random.Generator, textured: bool = False) -> Image.Image:
    """The scene as an RGB image: textured background, shapes drawn at twice the size, then box-downsampled.
    ``textured``: each shape's pixels outside its class's :func:`class_texture` are darkened (no extra random
    draws, so the image is otherwise the same)."""
    scale = 2
    side = scene.width * scale
    canvas = Image.fromarray(_background(rng, scene.width)).resize((side, scene.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-18, 19, 3), 0, 255))
        _draw_shape(draw, obj, scale, rgb, tuple(int(v * 0.55) for v in rgb))
        if textured:
            x1, y1, x2, y2 = (max(0, min(side, int(v * scale) + d)) for v, d in zip(obj.box, (-2, -2, 3, 3)))
            mask = Image.new("L", canvas.size, 0)
            _draw_shape(ImageDraw.Draw(mask), obj, scale, 255, 255)
            dark = (np.asarray(mask)[y1:y2, x1:x2] > 0) & ~class_texture(obj.category, side)[y1:y2, x1:x2]
            region = np.asarray(canvas.crop((x1, y1, x2, y2))).copy()
            region[dark] = (region[dark] * _TEXTURE_DARKEN).astype(np.uint8)
            canvas.paste(Image.fromarray(region), (x1, y1))
    return canvas.reduce(scale)

