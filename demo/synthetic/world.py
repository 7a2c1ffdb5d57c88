"""Building and writing the synthetic world: every scene with its expressions, the images, the simulated upstream
outputs of the training images, the pretraining corpus, the split files and ``world.json`` (see the package
docstring for the layout), cached by the config's hash."""
from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from demo.synthetic.config import (CLASSES, COLOURS, DATASET, FAMILIES, GENERATOR_VERSION, KINDS, LOCATIONS,
                                   PREDICATES, SIZE_EXTENT, SIZES, SPLITS, TEST_FAMILY, SyntheticConfig, rng_for)
from demo.synthetic.language import SYNONYMS, add_expressions, pretrain_caption
from demo.synthetic.render import render_scene
from demo.synthetic.scenes import Scene, sample_scene
from demo.synthetic.upstream import ImageUpstream, combine_upstream, simulate_image_upstream
from utils.box_ops import elementwise_iou
from utils.io import atomic_torch_save, atomic_write_bytes
from utils.misc import available_cpus

_IMAGE_RE = re.compile(r"^(syn|pre)_\d{6}\.jpg$")
_PARALLEL_MIN_IMAGES = 1000


@dataclass
class World:
    """The generated world in memory: scenes (with expressions) per split and the pretraining pairs."""
    config: SyntheticConfig
    splits: Dict[str, List[Scene]]
    pretrain: List[Tuple[Scene, str]]


def image_names(config: SyntheticConfig) -> Dict[str, List[str]]:
    """File names per split: ``syn_000001.jpg`` ... numbered through train, val, testA, testB."""
    names, start = {}, 1
    for split, n in config.split_sizes().items():
        names[split] = [f"syn_{start + i:06d}.jpg" for i in range(n)]
        start += n
    return names


def pretrain_names(config: SyntheticConfig) -> List[str]:
    """File names of the pretraining corpus: ``pre_000001.jpg`` ..."""
    return [f"pre_{i + 1:06d}.jpg" for i in range(config.n_pretrain)]


def world_item(config: SyntheticConfig, split: str, index: int, name: str) -> Any:
    """Scene ``index`` of ``split`` with its expressions, or for ``split`` 'pretrain' a (scene, caption) pair;
    a function of (config, split, index) only, so any partition of the work gives the same world."""
    scene = sample_scene(config, split, index, name)
    if split == "pretrain":
        return scene, pretrain_caption(scene, rng_for(config, "pretrain", "pretrain", index))
    return add_expressions(scene, config, split, index)


def _all_names(config: SyntheticConfig) -> Dict[str, List[str]]:
    return {**image_names(config), "pretrain": pretrain_names(config)}


def _assemble(config: SyntheticConfig, items: Dict[str, List[Any]]) -> World:
    return World(config, {split: items[split] for split in image_names(config)}, items["pretrain"])


def build_world(config: SyntheticConfig) -> World:
    """Every scene and expression of ``config`` (no files written)."""
    return _assemble(config, {split: [world_item(config, split, i, name) for i, name in enumerate(names)]
                              for split, names in _all_names(config).items()})


def _write_chunk(config: SyntheticConfig, split: str, start: int, names: Sequence[str], folder: str
                 ) -> List[Tuple[Any, Optional[ImageUpstream]]]:
    """Build items ``start .. start + len(names) - 1`` of ``split``, write their images into ``folder`` and, for the
    train split, simulate what the upstream models say about them."""
    items = []
    for index, name in enumerate(names, start):
        item = world_item(config, split, index, name)
        scene = item[0] if split == "pretrain" else item
        image = render_scene(scene, rng_for(config, "render", split, index), config.class_textures)
        atomic_write_bytes(os.path.join(folder, name), _jpeg_bytes(image, config.jpeg_quality), durable=False)
        items.append((item, simulate_image_upstream(scene, config, index) if split == "train" else None))
    return items


def write_world(config: SyntheticConfig, paths: Dict[str, str], workers: int = 1
                ) -> Tuple[World, List[ImageUpstream]]:
    """Build the world, write its images and simulate the upstream outputs of its training images, in ``workers``
    processes (spawned; each scene, image and upstream output depends only on its own seeded draws, so the files are
    the same for any ``workers``). Worlds under ``_PARALLEL_MIN_IMAGES`` images are written in this process, where a
    pool's start-up would cost more than it saves. Returns the world and the training images' upstream outputs."""
    names = _all_names(config)
    total = sum(map(len, names.values()))
    jobs = []
    chunk = max(1, math.ceil(total / (4 * workers)))
    for split, split_names in names.items():
        folder = paths["pretrain_images" if split == "pretrain" else "images"]
        jobs += [(config, split, start, split_names[start:start + chunk], folder)
                 for start in range(0, len(split_names), chunk)]
    chunks = None
    if workers > 1 and total >= _PARALLEL_MIN_IMAGES:
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                chunks = list(pool.map(_write_chunk, *zip(*jobs)))
        except BrokenProcessPool as exc:  # e.g. a __main__ that spawned processes cannot import (python - < file)
            print(f"synthetic world: worker processes failed ({exc}); writing it in this process", file=sys.stderr)
    if chunks is None:
        chunks = [_write_chunk(*job) for job in jobs]
    items: Dict[str, List[Any]] = {split: [] for split in names}
    upstream: List[ImageUpstream] = []
    for job, written in zip(jobs, chunks):
        items[job[1]].extend(item for item, _ in written)
        upstream.extend(image for _, image in written if image is not None)
    return _assemble(config, items), upstream


def _prior_accuracy(scenes: Sequence[Scene], box_of: Callable[[Scene], Sequence[float]]) -> float:
    """Acc@0.5 of a language-free guess ``box_of(scene)`` for every expression of ``scenes``."""
    preds, gts = [], []
    for scene in scenes:
        for e in scene.expressions:
            preds.append(box_of(scene))
            gts.append(scene.obj(e.target).box)
    if not preds:
        return 0.0
    ious = elementwise_iou(torch.tensor(preds, dtype=torch.float64), torch.tensor(gts, dtype=torch.float64))
    return round(float((ious >= 0.5).double().mean()), 4)


def _summary(world: World, upstream_counts: Dict[str, Any]) -> Dict[str, Any]:
    """Counts per split, expression kinds, target families, language-free priors and the upstream noise."""
    config = world.config
    train_targets = [s.obj(e.target) for s in world.splits["train"] for e in s.expressions]
    mw = float(np.median([o.box[2] - o.box[0] for o in train_targets]))
    mh = float(np.median([o.box[3] - o.box[1] for o in train_targets]))
    side = float(config.image_size)
    centre = (side / 2 - mw / 2, side / 2 - mh / 2, side / 2 + mw / 2, side / 2 + mh / 2)
    splits = {}
    for split, scenes in world.splits.items():
        expressions = [e for s in scenes for e in s.expressions]
        splits[split] = {
            "images": len(scenes), "expressions": len(expressions),
            "objects": sum(len(s.objects) for s in scenes),
            "kinds": {k: sum(e.kind == k for e in expressions) for k in KINDS},
            "target_families": {f: sum(s.obj(e.target).family == f for s in scenes for e in s.expressions)
                                for f in FAMILIES},
            "centre_box_acc": _prior_accuracy(scenes, lambda s: centre),
            "largest_object_acc": _prior_accuracy(scenes, lambda s: max(s.objects, key=lambda o: o.area).box),
        }
    return {"dataset": DATASET, "config_hash": config.config_hash(), "splits": splits,
            "upstream": upstream_counts, "pretrain_pairs": len(world.pretrain)}


def vocabulary() -> Dict[str, Any]:
    """Classes, families, colours, sizes, predicates and location words of the world."""
    return {"classes": list(CLASSES), "families": {f: list(m) for f, m in FAMILIES.items()},
            "test_families": dict(TEST_FAMILY), "colours": {k: list(v) for k, v in COLOURS.items()},
            "sizes": list(SIZES), "size_extent_px_at_128": {k: list(v) for k, v in SIZE_EXTENT.items()},
            "predicates": list(PREDICATES), "locations": list(LOCATIONS), "expression_kinds": list(KINDS),
            "synonyms": {c: list(SYNONYMS[c]) for c in CLASSES}}


def _json_bytes(obj: Any, indent: Optional[int] = None) -> bytes:
    return (json.dumps(obj, indent=indent, separators=None if indent else (",", ":")) + "\n").encode()


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _split_samples(scenes: Sequence[Scene]) -> List[Tuple[str, str, List[float], str, str]]:
    """The split file's samples. Strings are interned: equal strings are one object, so the pickled file does not
    depend on which process built which scene (pickle writes a repeated object as a reference)."""
    samples = []
    for scene in scenes:
        stem = os.path.splitext(scene.image)[0]
        for e in scene.expressions:
            x1, y1, x2, y2 = scene.obj(e.target).box
            samples.append((sys.intern(scene.image), sys.intern(f"{stem}_{e.target}"), [x1, y1, x2 - x1, y2 - y1],
                            sys.intern(e.phrase), sys.intern(e.kind)))
    return samples


def _annotations(world: World) -> Dict[str, Any]:
    return {split: [{"image": s.image, "width": s.width, "height": s.height,
                     "objects": [{"id": o.id, "class": o.category, "colour": o.colour, "size": o.size,
                                  "box": list(o.box)} for o in s.objects],
                     "expressions": [{"phrase": e.phrase, "target": e.target, "kind": e.kind,
                                      "spec": e.spec.to_dict()} for e in s.expressions]}
                    for s in scenes]
            for split, scenes in world.splits.items()}


def output_paths(data_root: str, split_root: str) -> Dict[str, str]:
    """Where :func:`generate` writes (folders and files)."""
    root = os.path.join(data_root, DATASET)
    paths = {"root": root, "images": os.path.join(root, "images"), "upstream": os.path.join(root, "upstream"),
             "pretrain": os.path.join(root, "pretrain"),
             "pretrain_images": os.path.join(root, "pretrain", "pretrain_images"),
             "caption_corpus": os.path.join(root, "pretrain", "caption_corpus.json"),
             "annotations": os.path.join(root, "annotations.json"), "world": os.path.join(root, "world.json")}
    for name in ("detections", "attributes", "scene_graphs", "captions", "synonyms"):
        paths[name] = os.path.join(root, "upstream", f"{name}.json")
    for split in SPLITS:
        paths[f"split_{split}"] = os.path.join(split_root, DATASET, f"{DATASET}_{split}.pth")
    return paths


def _expected_files(paths: Dict[str, str], config: SyntheticConfig) -> List[str]:
    files = [p for k, p in paths.items() if k not in ("root", "images", "upstream", "pretrain", "pretrain_images")]
    files += [os.path.join(paths["images"], n) for names in image_names(config).values() for n in names]
    files += [os.path.join(paths["pretrain_images"], n) for n in pretrain_names(config)]
    return files


def _cached_summary(paths: Dict[str, str], config: SyntheticConfig) -> Optional[Dict[str, Any]]:
    try:
        with open(paths["world"]) as f:
            world = json.load(f)
    except (OSError, ValueError):
        return None
    if world.get("config_hash") != config.config_hash() or not all(
            os.path.isfile(p) for p in _expected_files(paths, config)):
        return None
    return world.get("summary")


def _remove_stale_images(folder: str, keep: set) -> None:
    """Delete this generator's images (``syn_*.jpg`` / ``pre_*.jpg``) in ``folder`` that ``keep`` lacks."""
    for name in sorted(os.listdir(folder)):
        if _IMAGE_RE.match(name) and name not in keep:
            os.remove(os.path.join(folder, name))


def generate(data_root: str, split_root: str, config: Optional[SyntheticConfig] = None,
             force: bool = False, workers: Optional[int] = None) -> Dict[str, Any]:
    """Write the synthetic world for ``config`` (default: ``SyntheticConfig()``) and return its summary.

    Does nothing but return the stored summary when ``world.json`` holds the same config hash and every file
    exists (unless ``force``). Images this generator wrote for another config and not part of this one are
    removed. ``world.json`` is written last, so it only exists for a complete world. ``workers``: processes that
    build and render the scenes (default: the CPUs available); the files do not depend on it.
    """
    config = config or SyntheticConfig()
    start = time.perf_counter()
    paths = output_paths(data_root, split_root)
    cached = None if force else _cached_summary(paths, config)
    if cached is not None:
        return {**cached, "cached": True, "paths": paths, "seconds": round(time.perf_counter() - start, 2)}
    if os.path.exists(paths["world"]):  # from here on the folder is incomplete until world.json is rewritten
        os.remove(paths["world"])
    os.makedirs(paths["images"], exist_ok=True)
    os.makedirs(paths["pretrain_images"], exist_ok=True)
    world, upstream = write_world(config, paths, available_cpus() if workers is None else workers)
    _remove_stale_images(paths["images"], {s.image for scenes in world.splits.values() for s in scenes})
    _remove_stale_images(paths["pretrain_images"], {s.image for s, _ in world.pretrain})
    payloads, counts = combine_upstream(upstream)
    for name, payload in payloads.items():
        atomic_write_bytes(paths[name], _json_bytes(payload))
    corpus = {"image_dir": "pretrain_images",
              "pairs": [{"image": scene.image, "caption": caption} for scene, caption in world.pretrain]}
    atomic_write_bytes(paths["caption_corpus"], _json_bytes(corpus))
    for split, scenes in world.splits.items():
        atomic_torch_save(_split_samples(scenes), paths[f"split_{split}"])
    atomic_write_bytes(paths["annotations"], _json_bytes(_annotations(world)))
    summary = _summary(world, counts)
    atomic_write_bytes(paths["world"], _json_bytes({"dataset": DATASET, "generator_version": GENERATOR_VERSION,
                                               "config_hash": config.config_hash(), "config": config.to_dict(),
                                               "vocabulary": vocabulary(), "summary": summary}, indent=2))
    return {**summary, "cached": False, "paths": paths, "seconds": round(time.perf_counter() - start, 2)}
