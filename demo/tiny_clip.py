"""Contrastive pretraining of a tiny OpenAI CLIP on an image-caption corpus (the demo's stand-in for CLIP).

The corpus is ``caption_corpus.json`` (docs/upstream_formats.md): ``{"image_dir": ..., "pairs": [{"image",
"caption"}]}`` with ``image_dir`` relative to the JSON's folder. The model is an ordinary ``clip.model.CLIP``
trained with CLIP's symmetric InfoNCE loss, and is saved in OpenAI's released checkpoint format (a TorchScript
archive with CLIP's fp16 weights), which ``clip.load(path)`` and the repo's ``--model PATH`` read like a real
CLIP file. A ``<output>.json`` sidecar records the configuration, the training statistics and a cache key, so a
rerun with the same corpus and settings returns at once.

``python -m demo.tiny_clip --corpus PATH --output PATH [--image_resolution 96 --epochs N ...]``
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import clip
import torch
import torch.nn.functional as F
from clip.model import CLIP, convert_weights
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, PILToTensor, Resize
from tqdm import tqdm

from models.clip_vg import clip_text_blocks_sdpa
from models.onednn_linear import matmul_backend
from utils.io import atomic_write_bytes, write_json

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = 100.0
CACHE_VERSION = 2


@dataclass(frozen=True)
class TinyClipConfig:
    """Dimensions of a ViT CLIP. Head counts are width // 64, the rule ``clip.model.build_model`` uses to rebuild
    a model from its weights, so both widths must be multiples of 64. The defaults equal ``random:tiny`` of
    ``models/clip_backbone.py``; at 96 px a batch of 128 pairs takes about 0.35 s on 2 CPU cores, so 30 epochs
    over 2,000 pairs take about 3 minutes."""

    embed_dim: int = 64
    vision_width: int = 128
    vision_layers: int = 4
    vision_patch_size: int = 16
    text_width: int = 64
    text_layers: int = 2
    context_length: int = 77
    vocab_size: int = 49408

    def __post_init__(self) -> None:
        for name in ("vision_width", "text_width"):
            if getattr(self, name) % 64:
                raise ValueError(f"TinyClipConfig.{name}={getattr(self, name)}: must be a multiple of 64 "
                                 "(clip.load infers heads = width // 64)")

    def build(self, image_resolution: int) -> CLIP:
        """A freshly initialised fp32 ``clip.model.CLIP`` taking ``image_resolution`` square images."""
        if image_resolution % self.vision_patch_size:
            raise ValueError(f"image_resolution {image_resolution} is not a multiple of the patch size "
                             f"{self.vision_patch_size}")
        return CLIP(self.embed_dim, image_resolution, self.vision_layers, self.vision_width, self.vision_patch_size,
                    self.context_length, self.vocab_size, self.text_width, self.text_width // 64, self.text_layers)


@dataclass
class CaptionCorpus:
    """Decoded pairs: ``images`` (N, 3, R, R) uint8 after CLIP's resize + centre crop, ``tokens`` (N, L) CLIP ids,
    ``caption_ids`` (N,) equal for equal captions (such pairs count as matches in the loss and in retrieval)."""

    images: torch.Tensor
    tokens: torch.Tensor
    caption_ids: torch.Tensor
    captions: List[str]
    image_paths: List[str]

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, index: Sequence[int]) -> "CaptionCorpus":
        idx = torch.as_tensor(index, dtype=torch.long)
        keep = idx.tolist()
        return CaptionCorpus(self.images[idx], self.tokens[idx], self.caption_ids[idx],
                             [self.captions[i] for i in keep], [self.image_paths[i] for i in keep])


def read_corpus_json(corpus_json: str) -> Tuple[str, List[Dict[str, str]]]:
    """(absolute image folder, pairs) of a ``caption_corpus.json``, with clear errors for malformed entries."""
    with open(corpus_json, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "image_dir" not in data or not isinstance(data.get("pairs"), list):
        raise ValueError(f"{corpus_json}: expected an object with 'image_dir' and a 'pairs' list")
    pairs = data["pairs"]
    if not pairs:
        raise ValueError(f"{corpus_json}: 'pairs' is empty")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or not isinstance(pair.get("image"), str) \
                or not isinstance(pair.get("caption"), str) or not pair["caption"].strip():
            raise ValueError(f"{corpus_json}: pair {i} needs a string 'image' and a non-empty string 'caption', "
                             f"got {pair!r}")
    image_dir = os.path.join(os.path.dirname(os.path.abspath(corpus_json)), data["image_dir"])
    return image_dir, pairs


def load_caption_corpus(corpus_json: str, image_resolution: int, context_length: int = 77) -> CaptionCorpus:
    """Decode every image once (CLIP's bicubic resize + centre crop, kept as uint8) and tokenise every caption
    with ``clip.tokenize(truncate=True)``."""
    image_dir, pairs = read_corpus_json(corpus_json)
    prepare = Compose([Resize(image_resolution, interpolation=InterpolationMode.BICUBIC),
                       CenterCrop(image_resolution), PILToTensor()])
    images = torch.empty(len(pairs), 3, image_resolution, image_resolution, dtype=torch.uint8)
    paths = []
    for i, pair in enumerate(tqdm(pairs, desc="decode corpus", unit="img", leave=False)):
        path = os.path.join(image_dir, pair["image"])
        try:
            with Image.open(path) as im:
                images[i] = prepare(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{corpus_json}: pair {i}: cannot read image {path}: {e}") from e
        paths.append(path)
    captions = [pair["caption"] for pair in pairs]
    tokens = clip.tokenize(captions, context_length=context_length, truncate=True)
    caption_ids = torch.unique(tokens, dim=0, return_inverse=True)[1]
    return CaptionCorpus(images, tokens, caption_ids, captions, paths)


def split_corpus(corpus: CaptionCorpus, holdout_fraction: float, seed: int) -> Tuple[CaptionCorpus, CaptionCorpus]:
    """(train, held-out) by a seeded permutation; the held-out part has round(fraction * N) pairs, at least 2."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction {holdout_fraction}: must be strictly between 0 and 1")
    n_held = max(2, round(holdout_fraction * len(corpus)))
    if len(corpus) - n_held < 2:
        raise ValueError(f"corpus of {len(corpus)} pairs is too small to hold out {n_held} and train on the rest")
    order = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(seed)).tolist()
    return corpus.subset(sorted(order[n_held:])), corpus.subset(sorted(order[:n_held]))


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) -> float, CLIP-normalised (what ``clip.load``'s preprocess returns)."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def encode_text(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` on the token columns up to the batch's last end-of-text token only
    (``clip_text_blocks_sdpa``, its matmuls through ``F.linear``): the features are CLIP's up to float rounding, at a
    fraction of the cost for short captions."""
    end = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
    with matmul_backend("blas"):
        x = model.ln_final(clip_text_blocks_sdpa(model, tokens[:, :int(end.max()) + 1]))
    return x[torch.arange(x.shape[0], device=x.device), end] @ model.text_projection


def contrastive_loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor,
                     caption_ids: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE; pairs with identical captions are all positives (uniform soft targets)."""
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(encode_text(model, tokens), dim=-1)
    logits_per_image = model.logit_scale.exp() * image_features @ text_features.t()
    logits_per_text = logits_per_image.t()
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets))


@torch.no_grad()
def encode_corpus(model: CLIP, corpus: CaptionCorpus, batch_size: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised (image, text) features of every pair, fp32 on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    img_feats, txt_feats = [], []
    for start in range(0, len(corpus), batch_size):
        images = normalize_images(corpus.images[start:start + batch_size].to(device))
        img_feats.append(model.encode_image(images).float().cpu())
        txt_feats.append(encode_text(model, corpus.tokens[start:start + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return F.normalize(torch.cat(img_feats), dim=-1), F.normalize(torch.cat(txt_feats), dim=-1)


def retrieval_accuracy(model: CLIP, corpus: CaptionCorpus, n: Optional[int] = None) -> Dict[str, float]:
    """Top-1 retrieval among the first ``n`` pairs (all when None). A retrieved caption (image) counts as correct
    when its caption text equals the query's, so repeated captions are not penalised; ``chance`` is the expected
    top-1 accuracy of a random ranking."""
    if n is not None:
        if n < 2:
            raise ValueError(f"retrieval_accuracy: n={n}, need at least 2 pairs")
        corpus = corpus.subset(range(min(n, len(corpus))))
    img, txt = encode_corpus(model, corpus)
    sim = img @ txt.t()
    ids = corpus.caption_ids
    same = ids[:, None] == ids[None, :]
    return {
        "image_to_text_top1": (ids[sim.argmax(dim=1)] == ids).float().mean().item(),
        "text_to_image_top1": (ids[sim.argmax(dim=0)] == ids).float().mean().item(),
        "chance": same.float().mean().item(),
        "n": len(corpus),
    }


def save_openai_checkpoint(model: CLIP, path: str) -> None:
    """Save ``model`` as OpenAI releases CLIP: a TorchScript archive of the model with ``convert_weights``' fp16
    weights. ``clip.load`` reads it (a plain state dict would not: ``clip.load`` retries ``torch.load`` on the
    file handle ``torch.jit.load`` already consumed, openai/CLIP#396). ``model`` ends up on the CPU in fp32 with
    the fp16-rounded values, i.e. equal to what ``clip.load(path, device='cpu')`` returns."""
    model.cpu().eval()
    convert_weights(model)
    resolution = model.visual.input_resolution
    example = (torch.zeros(1, 3, resolution, resolution), clip.tokenize(["a photo"], model.context_length))
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, torch.jit.TracerWarning):  # torch.jit's notices
            warnings.simplefilter("ignore", category)
        traced = torch.jit.trace(model, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    model.float()


def file_sha256(paths: Sequence[str]) -> str:
    """One SHA-256 over the bytes of ``paths`` in order."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def corpus_sha256(corpus_json: str) -> str:
    """Hash of the corpus JSON and every image it names (a changed image invalidates the cache)."""
    image_dir, pairs = read_corpus_json(corpus_json)
    return file_sha256([corpus_json] + [os.path.join(image_dir, p["image"]) for p in pairs])


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: CLIP, weight_decay: float) -> List[dict]:
    """Weight decay on matrices only (not on gains, biases, the class embedding or the logit scale), as CLIP."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _shift_augment(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each uint8 image by up to ``max_shift`` pixels (edge padding). No flips: captions say left/right."""
    if max_shift == 0:
        return images
    size = images.shape[-1]
    padded = F.pad(images.float(), [max_shift] * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2), generator=generator).tolist()
    return torch.stack([padded[i, :, y:y + size, x:x + size] for i, (x, y) in enumerate(offsets)]).to(images.dtype)


def pretrain_tiny_clip(corpus_json: str, output_path: str, *, image_resolution: int = 96,
                       config: TinyClipConfig = TinyClipConfig(), epochs: int = 30, batch_size: int = 128,
                       lr: float = 1e-3, weight_decay: float = 0.1, warmup_fraction: float = 0.05,
                       max_shift: int = 4, holdout_fraction: float = 0.1, seed: int = 0,
                       device: str = "cpu", max_seconds: Optional[float] = None) -> dict:
    """Pretrain a tiny CLIP on ``corpus_json`` and save it to ``output_path`` (OpenAI format, see
    ``save_openai_checkpoint``) plus the ``<output_path>.json`` sidecar; returns the statistics.

    A held-out ``holdout_fraction`` of the pairs never trains; retrieval on it is reported for the trained model
    and for its random initialisation. ``max_seconds`` bounds training time: after the first epoch the schedule
    is shortened to the epochs that fit, so the learning rate still anneals. When the output and its sidecar
    exist with the same cache key (corpus bytes and all settings), nothing runs and the saved statistics return
    with ``cached`` set to True.
    """
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size}, lr={lr}: need epochs >= 1, batch_size >= 2, "
                         "lr > 0")
    settings = dict(image_resolution=image_resolution, config=dataclasses.asdict(config), epochs=epochs,
                    batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_fraction=warmup_fraction,
                    max_shift=max_shift, holdout_fraction=holdout_fraction, seed=seed, max_seconds=max_seconds)
    key = hashlib.sha256(json.dumps(dict(settings, version=CACHE_VERSION, corpus=corpus_sha256(corpus_json)),
                                    sort_keys=True).encode()).hexdigest()
    sidecar = output_path + ".json"
    if os.path.isfile(output_path) and os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("cache_key") == key:
            print(f"tiny CLIP {output_path} is up to date (cache key {key[:12]}); skipping pretraining",
                  file=sys.stderr)
            return dict(previous, cached=True)

    start_time = time.monotonic()
    corpus = load_caption_corpus(corpus_json, image_resolution, config.context_length)
    train, heldout = split_corpus(corpus, holdout_fraction, seed)
    torch.manual_seed(seed)
    model = config.build(image_resolution).to(device)
    retrieval_init = retrieval_accuracy(model, heldout)

    steps_per_epoch = max(1, len(train) // batch_size)
    planned_epochs = epochs
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    generator = torch.Generator().manual_seed(seed)
    epoch_losses: List[float] = []
    step = epoch = 0
    model.train()
    while epoch < planned_epochs:
        epoch_start = time.monotonic()
        order = torch.randperm(len(train), generator=generator)
        total = planned_epochs * steps_per_epoch
        running = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"tiny CLIP epoch {epoch + 1}/{planned_epochs}", unit="batch")
        for b in bar:
            idx = order[b * batch_size:(b + 1) * batch_size]
            images = normalize_images(_shift_augment(train.images[idx], max_shift, generator).to(device))
            for group in optimizer.param_groups:
                group["lr"] = lr * _lr_factor(step, total, max(1, round(warmup_fraction * total)))
            loss = contrastive_loss(model, images, train.tokens[idx].to(device), train.caption_ids[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))
            step += 1
            running += loss.item()
            bar.set_postfix(loss=f"{running / (b + 1):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        bar.close()
        epoch_losses.append(running / steps_per_epoch)
        epoch += 1
        if max_seconds is not None and epoch == 1:
            fit = int((max_seconds - (time.monotonic() - start_time)) // (time.monotonic() - epoch_start)) + 1
            planned_epochs = max(1, min(epochs, fit))

    save_openai_checkpoint(model, output_path)
    stats = dict(
        output=os.path.abspath(output_path), corpus=os.path.abspath(corpus_json), settings=settings,
        n_train=len(train), n_heldout=len(heldout), epochs_run=len(epoch_losses), steps=step,
        loss_per_epoch=epoch_losses, first_epoch_loss=epoch_losses[0], final_loss=epoch_losses[-1],
        retrieval=retrieval_accuracy(model, heldout), retrieval_random_init=retrieval_init,
        seconds=round(time.monotonic() - start_time, 1), cache_key=key,
    )
    write_json(sidecar, stats)
    return dict(stats, cached=False)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Command line: pretrain (or find cached) and print the statistics JSON on stdout."""
    p = argparse.ArgumentParser("python -m demo.tiny_clip", description="pretrain a tiny CLIP on a caption corpus",
                                allow_abbrev=False)
    p.add_argument("--corpus", required=True, help="caption_corpus.json")
    p.add_argument("--output", required=True, help="checkpoint path (OpenAI format; <output>.json gets the stats)")
    p.add_argument("--image_resolution", type=int, default=96)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max_seconds", type=float, default=None, help="time budget; the schedule shrinks to fit")
    args = p.parse_args(argv)
    if not os.path.isfile(args.corpus):
        p.error(f"--corpus {args.corpus}: no such file")
    stats = pretrain_tiny_clip(args.corpus, args.output, image_resolution=args.image_resolution, epochs=args.epochs,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                               max_seconds=args.max_seconds)
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
