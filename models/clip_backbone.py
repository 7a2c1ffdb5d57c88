"""Where the CLIP weights come from, and nothing else (docs/clip_weights.md is the user's guide).

A ``--model`` spec is one of
- a CLIP name, ``ViT-B/16``, ``ViT-B/32``, ``ViT-L/14`` or ``ViT-L/14@336px``, resolved in this order: OpenAI's file
  under ``--clip_download_root`` (default ``~/.cache/clip``) when its SHA-256 is the one in OpenAI's URL (as
  ``clip.load`` checks it); the Hugging Face hub repository open_clip uses for OpenAI's weights (``NAMED_HUB_REPOS``,
  through ``huggingface_hub``: its cache, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, tokens); OpenAI's URL (not tried
  under ``HF_HUB_OFFLINE=1``). The weights found must be that architecture;
- ``hf-hub:ORG/NAME[@REVISION]``: a hub repository in open_clip or transformers ``CLIPModel`` layout
  (``models.clip_hub``, ``models.clip_layouts``);
- a path: a ``.safetensors`` file, a ``torch.save``d state dict, an OpenAI TorchScript file, or a folder with
  either hub layout (a ``save_pretrained`` folder or a hub snapshot);
- ``random:<name>`` (``CLIP_ARCHS``: the real architectures at their sizes, or the small ``tiny``), seeded, for
  tests, demos and benchmarks. Nothing falls back to random weights.

Files are read as data only (``models.clip_files``): nothing in them runs. Every loader returns an fp32
``clip.model.CLIP`` (fp16 tensors widened exactly) and a *source record* ``{spec, seed, arch, dims, sha256,
origin}`` that compact checkpoints store; ``rebuild_clip`` turns a record back into the same CLIP (hub sources
pinned to the recorded commit, so offline from the cache), never by opening a path the record names.

``python -m models.clip_backbone --model SPEC [--output FILE]`` prefetches: it resolves SPEC (downloading when
needed, filling the caches) and writes the CLIP as an OpenAI-layout state dict that ``--model FILE`` reads back.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
import urllib.request
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import clip
import torch
from clip.model import CLIP, ResidualAttentionBlock, VisionTransformer
from tqdm import tqdm

from models.clip_files import file_sha256, metadata_json, read_weights_file
from models.clip_hash import clip_sha256
from models.clip_hub import HUB_PREFIX, HubMiss, WeightFiles, folder_files, hub_files, parse_hub_spec
from models.clip_layouts import (LAYOUT_TRANSFORMERS, METADATA_KEYS, TRANSFORMERS_CONFIG, detect_layout,
                                 open_clip_heads, openai_dims, openai_from_transformers, transformers_config)
from utils.errors import CLIPVGError, InputError
from utils.io import atomic_torch_save, atomic_write_bytes

RANDOM_PREFIX = "random:"
DEFAULT_DOWNLOAD_ROOT = os.path.expanduser("~/.cache/clip")
# The hub repositories open_clip loads OpenAI's own weights from (OpenAI's tensor names).
NAMED_HUB_REPOS = {"ViT-B/16": "timm/vit_base_patch16_clip_224.openai",
                   "ViT-B/32": "timm/vit_base_patch32_clip_224.openai",
                   "ViT-L/14": "timm/vit_large_patch14_clip_224.openai",
                   "ViT-L/14@336px": "timm/vit_large_patch14_clip_336.openai"}
# safetensors metadata key of the files this module writes: the dims, head counts included.
DIMS_METADATA_KEY = "clip_dims"

# Constructor arguments of clip.model.CLIP. image_resolution None: taken from --imsize.
CLIP_ARCHS: Dict[str, Dict[str, Optional[int]]] = {
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                     context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
                     context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12,
                     transformer_layers=12),
    "ViT-L/14@336px": dict(embed_dim=768, image_resolution=336, vision_layers=24, vision_width=1024,
                           vision_patch_size=14, context_length=77, vocab_size=49408, transformer_width=768,
                           transformer_heads=12, transformer_layers=12),
    # Heads are width // 64, the rule clip.model.build_model uses to rebuild a CLIP from its tensors.
    "tiny": dict(embed_dim=64, image_resolution=None, vision_layers=4, vision_width=128, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                 transformer_layers=2),
}
_CLIP_ARGS = tuple(CLIP_ARCHS["ViT-B/16"])


class ClipWeightsNotFound(InputError):
    """No CLIP weights could be found for a spec; the message says where we looked and how to supply them."""


def make_clip(dims: Mapping[str, Any]) -> CLIP:
    """A freshly initialised fp32 ``clip.model.CLIP`` with the given constructor arguments and optional
    ``vision_heads`` (``clip.model.CLIP`` itself always uses ``vision_width // 64``; another count gets a
    ``clip.model.VisionTransformer`` built with it). Works on the meta device too."""
    args = {k: dims[k] for k in _CLIP_ARGS}
    heads = int(dims.get("vision_heads") or args["vision_width"] // 64)
    if heads == args["vision_width"] // 64:
        return CLIP(**args)
    model = CLIP(**dict(args, vision_width=64, vision_layers=0))  # its visual tower is replaced below
    model.visual = VisionTransformer(input_resolution=args["image_resolution"], patch_size=args["vision_patch_size"],
                                     width=args["vision_width"], layers=args["vision_layers"], heads=heads,
                                     output_dim=args["embed_dim"])
    return model


def clip_dims(model: CLIP) -> Dict[str, int]:
    """The constructor arguments of an existing ViT ``CLIP`` (read from its modules), plus ``vision_heads``."""
    visual = model.visual
    blocks = visual.transformer.resblocks
    return dict(embed_dim=int(model.text_projection.shape[1]), image_resolution=int(visual.input_resolution),
                vision_layers=int(visual.transformer.layers), vision_width=int(visual.transformer.width),
                vision_patch_size=int(visual.conv1.kernel_size[0]), context_length=int(model.context_length),
                vocab_size=int(model.vocab_size), transformer_width=int(model.transformer.width),
                transformer_heads=int(model.transformer.resblocks[0].attn.num_heads),
                transformer_layers=int(model.transformer.layers),
                vision_heads=int(blocks[0].attn.num_heads) if len(blocks) else int(visual.transformer.width) // 64)


def arch_name(dims: Mapping[str, Any]) -> str:
    """The ``CLIP_ARCHS`` name these dimensions match (``tiny`` at any resolution), else ``custom``."""
    for name, ref in CLIP_ARCHS.items():
        if all(ref[k] is None or ref[k] == dims.get(k) for k in ref) and \
                dims.get("vision_heads", dims["vision_width"] // 64) == dims["vision_width"] // 64:
            return name
    return "custom"


def source_record(spec: str, model: CLIP, seed: Optional[int] = None,
                  origin: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The record compact checkpoints store to rebuild ``model`` (``sha256`` computed on first need);
    ``origin`` says where the tensors came from (``kind``: random, openai-file, url, hf-hub, local, checkpoint)."""
    dims = clip_dims(model)
    return dict(spec=spec, seed=seed, arch=arch_name(dims), dims=dims, sha256=None,
                origin=dict(origin or {"kind": "random" if spec.startswith(RANDOM_PREFIX) else "unknown"}))


def random_clip(name: str, seed: int = 0, image_resolution: Optional[int] = None) -> CLIP:
    """A seeded random CLIP of a ``CLIP_ARCHS`` configuration (the global RNG is left untouched)."""
    if name not in CLIP_ARCHS:
        raise InputError(f"--model {RANDOM_PREFIX}{name}: unknown random CLIP configuration; "
                         f"expected one of {', '.join(RANDOM_PREFIX + n for n in CLIP_ARCHS)}")
    dims = dict(CLIP_ARCHS[name])
    if dims["image_resolution"] is None:
        if image_resolution is None or image_resolution % dims["vision_patch_size"]:
            raise InputError(f"--imsize {image_resolution}: {RANDOM_PREFIX}{name} needs a multiple of its patch "
                             f"size {dims['vision_patch_size']}")
        dims["image_resolution"] = image_resolution
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_clip(dims).float()


def build_clip(state: Mapping[str, torch.Tensor], dims: Mapping[str, Any], what: str) -> CLIP:
    """An fp32 ``CLIP`` of ``dims`` holding exactly ``state``'s values (OpenAI layout; fp16/bf16 widened exactly,
    fp32 kept). Built on the meta device, so no time goes into an initialisation the weights replace."""
    # Metadata tensors of TorchScript archives, and causal masks (rebuilt below), are not weights.
    sd = {k: v for k, v in state.items() if k not in METADATA_KEYS and not k.endswith(".attn_mask")}
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "copying ... to a meta parameter is a no-op"
        model = make_clip(dims)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if tuple(sd[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise InputError(f"{what}: not a complete OpenAI ViT CLIP state dict (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict({k: v.detach().to("cpu", torch.float32, copy=True) for k, v in sd.items()}, assign=True)
    for block in model.modules():  # the text tower's causal mask is a plain attribute, still on the meta device
        if isinstance(block, ResidualAttentionBlock) and block.attn_mask is not None:
            block.attn_mask = model.build_attention_mask()
    return model


def clip_from_state_dict(state_dict: Mapping[str, torch.Tensor], what: str = "state dict",
                         heads: Optional[Mapping[str, Any]] = None) -> CLIP:
    """An fp32 ``CLIP`` from OpenAI-layout tensors (a checkpoint's ``clip.*``); architecture read from the tensors,
    head counts from ``heads`` (``vision_heads`` / ``transformer_heads``, e.g. a source record's dims) or
    OpenAI's ``width // 64``."""
    detect_layout(state_dict, what)
    heads = heads or {}
    dims = openai_dims(state_dict, what, heads.get("vision_heads"), heads.get("transformer_heads"))
    return build_clip(state_dict, dims, what)


def clip_from_files(files: WeightFiles, what: str, openai_weights: bool = False) -> CLIP:
    """The CLIP in ``files`` (either layout), exactly. ``openai_weights``: the source is known to hold OpenAI's
    own weights (a named model's repository), so an open_clip config need not say ``quick_gelu``."""
    if files.weights not in what:
        what = f"{what}: {files.weights}"
    state = read_weights_file(files.weights, what)
    config = files.config
    if detect_layout(state, what) == LAYOUT_TRANSFORMERS:
        if not config or os.path.basename(config) != TRANSFORMERS_CONFIG:
            raise InputError(f"{what}: transformers CLIPModel weights without config.json next to them (it holds "
                             "the head counts and activation)")
        state, dims = openai_from_transformers(state, transformers_config(config, what), what)
        return build_clip(state, dims, what)
    vision_heads = text_heads = None
    if config and os.path.basename(config) != TRANSFORMERS_CONFIG:
        with open(config, encoding="utf-8") as fh:
            try:
                vision_heads, text_heads = open_clip_heads(json.load(fh), what, openai_weights)
            except ValueError as exc:
                if isinstance(exc, InputError):
                    raise
                raise InputError(f"{what}: {config} is not valid JSON ({exc})") from exc
    else:
        written = metadata_json(files.weights, DIMS_METADATA_KEY)
        if written:
            vision_heads, text_heads = written.get("vision_heads"), written.get("transformer_heads")
    return build_clip(state, openai_dims(state, what, vision_heads, text_heads), what)


def _check_arch(model: CLIP, name: str, where: str) -> CLIP:
    dims = clip_dims(model)
    if arch_name(dims) != name:
        got = (f"{dims['vision_layers']} layers x {dims['vision_width']} wide, patch {dims['vision_patch_size']}, "
               f"{dims['image_resolution']} px")
        raise InputError(f"--model {name}: {where} holds a {arch_name(dims)} CLIP ({got}), not {name}; remove or "
                         "replace that copy")
    return model


def _openai_url(name: str, root: str) -> Tuple[str, str, str]:
    """(OpenAI's URL, the file under ``root``, the SHA-256 in the URL path) of a named model."""
    url = clip.clip._MODELS[name]
    return url, os.path.join(root, os.path.basename(url)), url.split("/")[-2]


def _download(url: str, target: str, expected_sha: str) -> str:
    """Download ``url`` to ``target`` (atomically) after checking its SHA-256."""
    digest, chunks = hashlib.sha256(), []
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(target), file=sys.stderr) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                chunks.append(chunk)
                bar.update(len(chunk))
    if digest.hexdigest() != expected_sha:
        raise OSError(f"downloaded SHA-256 {digest.hexdigest()[:16]} is not {expected_sha[:16]}")
    return atomic_write_bytes(target, b"".join(chunks))


def _fixes(spec: str) -> str:
    return (f"Fixes: on a machine with internet run `python -m models.clip_backbone --model {spec} --output "
            "clip.safetensors` and pass --model clip.safetensors; or pass --model PATH (a .safetensors / state dict "
            "/ OpenAI file, or a hub folder); or set HF_ENDPOINT to a reachable hub mirror (HF_HUB_CACHE / HF_HOME "
            "to where the hub cache is)")


def _load_named(name: str, download_root: Optional[str]) -> Tuple[CLIP, Dict[str, Any]]:
    from huggingface_hub import constants

    root = download_root or DEFAULT_DOWNLOAD_ROOT
    url, target, expected = _openai_url(name, root)
    looked: List[str] = []
    if os.path.isfile(target):
        sha = file_sha256(target)
        if sha == expected:
            model = clip_from_files(WeightFiles(target, None), f"--model {name}: {target}")
            return _check_arch(model, name, target), {"kind": "openai-file", "file": target, "url": url}
        looked.append(f"{target} (SHA-256 {sha[:12]}.. is not {expected[:12]}..: damaged or partial, delete it)")
    else:
        looked.append(f"{target} (no such file; --clip_download_root {root})")
    repo = NAMED_HUB_REPOS[name]
    try:
        files = hub_files(repo)
    except HubMiss as miss:
        looked.append(str(miss))
    else:
        where = f"hf-hub:{repo} ({files.weights})"
        model = clip_from_files(files, f"--model {name}: {where}", openai_weights=True)
        return _check_arch(model, name, where), files.origin
    if constants.is_offline_mode():
        looked.append(f"{url} (not tried: HF_HUB_OFFLINE=1)")
    else:
        try:
            _download(url, target, expected)
        except OSError as exc:
            looked.append(f"{url} ({type(exc).__name__}: {exc})")
        else:
            model = clip_from_files(WeightFiles(target, None), f"--model {name}: {url}")
            return _check_arch(model, name, url), {"kind": "url", "file": target, "url": url}
    raise ClipWeightsNotFound(f"--model {name}: no CLIP weights found; looked at: {'; '.join(looked)}. "
                              f"{_fixes(name)}")


def _load_hub(spec: str, revision: Optional[str] = None, prefer: Optional[str] = None
              ) -> Tuple[CLIP, Dict[str, Any]]:
    repo, spec_revision = parse_hub_spec(spec)
    try:
        files = hub_files(repo, revision or spec_revision, prefer)
    except HubMiss as miss:
        raise ClipWeightsNotFound(f"--model {spec}: no CLIP weights found; looked at: {miss}. {_fixes(spec)}") from miss
    return clip_from_files(files, f"--model {spec}: {files.weights}"), files.origin


def _load_path(path: str) -> Tuple[CLIP, Dict[str, Any]]:
    if os.path.isdir(path):
        files = folder_files(path)
    else:
        config = os.path.join(os.path.dirname(os.path.abspath(path)), TRANSFORMERS_CONFIG)
        files = WeightFiles(path, config if os.path.isfile(config) else None,
                            {"kind": "local", "file": os.path.abspath(path)})
    files.origin["file_sha256"] = file_sha256(files.weights)
    return clip_from_files(files, f"--model {path}"), files.origin


def load_clip(spec: str, download_root: Optional[str] = None, image_resolution: Optional[int] = None,
              seed: int = 0) -> Tuple[CLIP, Dict[str, Any]]:
    """Load an fp32 CLIP from a ``--model`` spec (see the module docstring); returns ``(clip, source record)``.
    ``image_resolution`` sizes ``random:tiny``; ``seed`` seeds ``random:`` configurations."""
    if spec.startswith(RANDOM_PREFIX):
        model = random_clip(spec[len(RANDOM_PREFIX):], seed, image_resolution)
        return model, source_record(spec, model, seed=seed)
    if spec.startswith(HUB_PREFIX):
        model, origin = _load_hub(spec)
        return model, source_record(spec, model, origin=origin)
    if spec in NAMED_HUB_REPOS:
        model, origin = _load_named(spec, download_root)
        return model, source_record(spec, model, origin=origin)
    if spec in clip.available_models():
        raise InputError(f"--model {spec}: a ResNet CLIP; CLIP-VG needs a ViT ({', '.join(NAMED_HUB_REPOS)})")
    if os.path.exists(spec):
        model, origin = _load_path(spec)
        return model, source_record(os.path.abspath(spec), model, origin=origin)
    folder = os.path.dirname(spec)
    if spec.endswith((".pt", ".pth", ".bin", ".safetensors")) or (folder and os.path.isdir(folder)):
        raise ClipWeightsNotFound(f"--model {spec}: no such file or folder (expected CLIP weights)")
    raise InputError(f"--model {spec}: not a CLIP name ({', '.join(NAMED_HUB_REPOS)}), hf-hub:ORG/NAME, an existing "
                     f"file or folder, or one of {', '.join(RANDOM_PREFIX + n for n in CLIP_ARCHS)}")


def describe_source(record: Mapping[str, Any]) -> str:
    """A short human description of where a record's CLIP came from."""
    origin = record.get("origin") or {}
    if origin.get("kind") == "hf-hub":
        return f"hf-hub:{origin.get('repo')}@{origin.get('revision')} {origin.get('file')}"
    if origin.get("file"):
        return f"{record.get('spec')} ({origin['file']})"
    return str(record.get("spec"))


def _recorded_local_file(record: Mapping[str, Any]) -> Optional[str]:
    """The spec of a local-file record whose file is still the very file recorded: a regular file whose bytes have
    the recorded SHA-256, checked before anything parses it. None otherwise (legacy records carry no file hash)."""
    origin = record.get("origin") or {}
    spec, path, want = str(record.get("spec") or ""), str(origin.get("file") or ""), origin.get("file_sha256")
    if origin.get("kind") != "local" or not want or not path or spec not in (path, os.path.dirname(path)):
        return None
    if not os.path.isfile(path) or not stat.S_ISREG(os.stat(path).st_mode) or file_sha256(path) != want:
        return None
    return spec


def rebuild_clip(record: Mapping[str, Any], download_root: Optional[str] = None,
                 image_resolution: Optional[int] = None) -> CLIP:
    """The CLIP a source record names: a ``random:`` seed, the hub repository at the recorded commit (offline from
    the cache), a CLIP name resolved as ``load_clip`` does, or the recorded local file when its bytes still have the
    recorded SHA-256. No other path a record names is ever opened (legacy records of local files, checkpoints):
    ``ClipWeightsNotFound`` then asks for ``--model``. The caller checks the tensors' SHA-256."""
    spec = str(record.get("spec") or "")
    origin = record.get("origin") or {}
    dims = record.get("dims") or {}
    if spec.startswith(RANDOM_PREFIX):
        return random_clip(spec[len(RANDOM_PREFIX):], record.get("seed") or 0,
                           dims.get("image_resolution", image_resolution))
    if origin.get("kind") == "hf-hub" and origin.get("repo"):
        try:
            return _load_hub(HUB_PREFIX + str(origin["repo"]), origin.get("revision"), origin.get("file"))[0]
        except ClipWeightsNotFound:
            if spec not in NAMED_HUB_REPOS:
                raise
    if spec in NAMED_HUB_REPOS:
        return _load_named(spec, download_root)[0]
    if spec.startswith(HUB_PREFIX):
        return _load_hub(spec)[0]
    local = _recorded_local_file(record)
    if local:
        return _load_path(local)[0]
    if origin.get("kind") == "local" and origin.get("file_sha256"):
        raise ClipWeightsNotFound(f"{origin.get('file')} is gone or no longer has the recorded SHA-256 "
                                  f"{str(origin['file_sha256'])[:16]}")
    raise ClipWeightsNotFound(f"the CLIP weights came from {describe_source(record)}, a path which a checkpoint's "
                              "record never makes CLIP-VG open")


def save_clip_file(model: CLIP, path: str) -> str:
    """Write ``model`` as an OpenAI-layout fp32 state dict (safetensors when ``path`` ends in ``.safetensors``,
    with the dims as metadata; else ``torch.save``), atomically; ``--model path`` reads it back exactly."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    dims = clip_dims(model)
    if path.endswith(".safetensors"):
        from safetensors.torch import save

        meta = {"format": "pt", DIMS_METADATA_KEY: json.dumps(dims, sort_keys=True)}
        return atomic_write_bytes(path, save(state, metadata=meta))
    if dims["vision_heads"] != dims["vision_width"] // 64 or \
            dims["transformer_heads"] != dims["transformer_width"] // 64:
        raise InputError(f"--output {path}: this CLIP's attention heads are not width // 64, which a plain state "
                         "dict cannot record; write a .safetensors file (it keeps the head counts)")
    return atomic_torch_save(state, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prefetch: resolve ``--model`` (downloading into the caches when needed), optionally write it to
    ``--output``, and print one JSON line: spec, source, architecture, SHA-256s."""
    parser = argparse.ArgumentParser(
        prog="python -m models.clip_backbone",
        description="Resolve a CLIP --model spec (filling the OpenAI / Hugging Face caches when it downloads) and "
                    "optionally write it as an OpenAI-layout state dict for machines without internet. Prints "
                    "one JSON line: spec, source (hub repo / revision / file, or file), arch, SHA-256s. "
                    "See docs/clip_weights.md.")
    parser.add_argument("--model", required=True,
                        help="ViT-B/16, ViT-B/32, ViT-L/14, ViT-L/14@336px, hf-hub:ORG/NAME[@REVISION], a file or "
                             "folder, or random:<name>")
    parser.add_argument("--output", default=None,
                        help="write the CLIP here: safetensors when it ends in .safetensors, else torch.save; "
                             "then run with --model FILE")
    parser.add_argument("--clip_download_root", default=None,
                        help="folder of OpenAI's CLIP files (default: ~/.cache/clip)")
    parser.add_argument("--imsize", type=int, default=224, help="image size of random:tiny (other specs: unused)")
    args = parser.parse_args(argv)
    try:
        model, record = load_clip(args.model, download_root=args.clip_download_root, image_resolution=args.imsize)
        line: Dict[str, Any] = dict(spec=record["spec"], source=record["origin"], arch=record["arch"],
                                    clip_sha256=clip_sha256(model))
        if args.output:
            save_clip_file(model, args.output)
            line.update(output=os.path.abspath(args.output), sha256=file_sha256(args.output))
    except CLIPVGError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
