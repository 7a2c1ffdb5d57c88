"""Where the CLIP weights come from, and nothing else.

A ``--model`` spec is one of
- a ``clip.available_models()`` ViT name (``ViT-B/16`` ...): read from ``--clip_download_root`` (default
  ``~/.cache/clip``) when the file is there, else downloaded by ``clip.load``; if that fails, ``ClipWeightsNotFound``
  says what was looked for and how to supply the weights;
- a path to an OpenAI CLIP file (TorchScript archive or plain state dict), read at its stored precision;
- ``random:<name>`` (``ViT-B/16``, ``ViT-B/32``, ``ViT-L/14`` at their real sizes, or the small ``tiny``), seeded,
  for tests, demos and benchmarks. Nothing falls back to random weights.

Every loader returns an fp32 ``clip.model.CLIP`` and a *source record* ``{spec, seed, arch, dims, sha256}`` that
compact checkpoints store to rebuild the same CLIP (``sha256`` is filled in lazily, see ``clip_sha256``).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import clip
import torch
from clip.model import CLIP, ResidualAttentionBlock, build_model

RANDOM_PREFIX = "random:"
DEFAULT_DOWNLOAD_ROOT = os.path.expanduser("~/.cache/clip")
# Keys of TorchScript CLIP archives that are metadata, not weights (``clip.model.build_model`` drops them too).
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")

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
    # Heads are width // 64, the rule clip.model.build_model uses to rebuild a CLIP from its tensors.
    "tiny": dict(embed_dim=64, image_resolution=None, vision_layers=4, vision_width=128, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                 transformer_layers=2),
}


class ClipWeightsNotFound(RuntimeError):
    """No CLIP weights could be found for a spec; the message says where we looked and how to supply them."""


def make_clip(dims: Mapping[str, Any]) -> CLIP:
    """A freshly initialised fp32 ``clip.model.CLIP`` with the given constructor arguments (works on the meta
    device too: ``with torch.device('meta'): make_clip(...)``)."""
    return CLIP(**dims)


def clip_dims(model: CLIP) -> Dict[str, int]:
    """The constructor arguments of an existing ViT ``CLIP`` (read from its modules)."""
    visual = model.visual
    return dict(embed_dim=int(model.text_projection.shape[1]), image_resolution=int(visual.input_resolution),
                vision_layers=int(visual.transformer.layers), vision_width=int(visual.transformer.width),
                vision_patch_size=int(visual.conv1.kernel_size[0]), context_length=int(model.context_length),
                vocab_size=int(model.vocab_size), transformer_width=int(model.transformer.width),
                transformer_heads=int(model.transformer.resblocks[0].attn.num_heads),
                transformer_layers=int(model.transformer.layers))


def arch_name(dims: Mapping[str, Any]) -> str:
    """The ``CLIP_ARCHS`` name these dimensions match (``tiny`` at any resolution), else ``custom``."""
    for name, ref in CLIP_ARCHS.items():
        if all(ref[k] is None or ref[k] == dims.get(k) for k in ref):
            return name
    return "custom"


def source_record(spec: str, model: CLIP, seed: Optional[int] = None, **extra: Any) -> Dict[str, Any]:
    """The record compact checkpoints store to rebuild ``model`` (``sha256`` computed on first need)."""
    dims = clip_dims(model)
    return dict(spec=spec, seed=seed, arch=arch_name(dims), dims=dims, sha256=None, **extra)


def random_clip(name: str, seed: int = 0, image_resolution: Optional[int] = None) -> CLIP:
    """A seeded random CLIP of a ``CLIP_ARCHS`` configuration (the global RNG is left untouched)."""
    if name not in CLIP_ARCHS:
        raise ValueError(f"--model {RANDOM_PREFIX}{name}: unknown random CLIP configuration; "
                         f"expected one of {', '.join(RANDOM_PREFIX + n for n in CLIP_ARCHS)}")
    dims = dict(CLIP_ARCHS[name])
    if dims["image_resolution"] is None:
        if image_resolution is None or image_resolution % dims["vision_patch_size"]:
            raise ValueError(f"--imsize {image_resolution}: {RANDOM_PREFIX}{name} needs a multiple of its patch "
                             f"size {dims['vision_patch_size']}")
        dims["image_resolution"] = image_resolution
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_clip(dims).float()


def clip_from_state_dict(state_dict: Mapping[str, torch.Tensor], what: str = "state dict") -> CLIP:
    """An fp32 ``CLIP`` holding exactly ``state_dict``'s values (fp16 tensors widened, fp32 ones kept: alone,
    ``clip.model.build_model`` would round fp32 weights to fp16). ``build_model`` infers the architecture; it
    runs on the meta device, so no time goes into a random initialisation that the weights replace."""
    sd = {k: v for k, v in state_dict.items() if k not in _METADATA_KEYS}
    if "visual.proj" not in sd:
        kind = "a ResNet CLIP (CLIP-VG needs a ViT)" if "visual.attnpool.c_proj.weight" in sd else "not a CLIP"
        raise ValueError(f"{what}: {kind}: no 'visual.proj' tensor")
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "copying ... to a meta parameter is a no-op"
            model = build_model(dict(sd))
        model.load_state_dict({k: v.detach().to("cpu", torch.float32, copy=True) for k, v in sd.items()},
                              assign=True)
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"{what}: not a complete OpenAI ViT CLIP state dict ({exc})") from exc
    for block in model.modules():  # the text tower's causal mask is a plain attribute, still on the meta device
        if isinstance(block, ResidualAttentionBlock) and block.attn_mask is not None:
            block.attn_mask = model.build_attention_mask()
    return model


def read_clip_file(path: str) -> Dict[str, torch.Tensor]:
    """The state dict of an OpenAI CLIP file: a TorchScript archive (as released) or a ``torch.save``d state
    dict (``clip.load`` cannot read the latter, openai/CLIP#396)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            return dict(torch.jit.load(path, map_location="cpu").state_dict())
    except RuntimeError:
        pass
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"--model {path}: not an OpenAI CLIP file (neither a TorchScript archive nor a torch "
                         f"state dict): {exc}") from exc
    if isinstance(obj, Mapping) and "model" in obj:
        raise ValueError(f"--model {path}: this is a CLIP-VG checkpoint, not a CLIP file; pass it with --resume, "
                         "--retrain or --eval_model (a checkpoint that holds CLIP tensors provides CLIP itself)")
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"--model {path}: expected a CLIP state dict (name -> tensor), got {type(obj).__name__}")
    return dict(obj)


def _download_target(name: str, root: str) -> Tuple[str, str]:
    url = clip.clip._MODELS[name]
    return os.path.join(root, os.path.basename(url)), url


def _load_named(name: str, download_root: Optional[str]) -> Tuple[CLIP, str]:
    if not name.startswith("ViT-"):
        raise ValueError(f"--model {name}: a ResNet CLIP; CLIP-VG needs a ViT "
                         f"({', '.join(n for n in clip.available_models() if n.startswith('ViT-'))})")
    root = download_root or DEFAULT_DOWNLOAD_ROOT
    target, url = _download_target(name, root)
    present = os.path.isfile(target)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            model, _ = clip.load(name, device="cpu", jit=False, download_root=root)
    except (OSError, RuntimeError) as exc:
        looked = (f"found {target} but could not use it (checksum or format) nor re-download it" if present
                  else f"looked for {target} (--clip_download_root {root}) and could not download it from {url}")
        raise ClipWeightsNotFound(
            f"--model {name}: no CLIP weights: {looked} ({type(exc).__name__}: {exc}). Supply them by copying the "
            f"OpenAI file {os.path.basename(target)} into {root} (or pointing --clip_download_root at its folder), "
            "by passing --model /path/to/an/OpenAI/CLIP/file, or by starting from a CLIP-VG checkpoint that holds "
            "the CLIP tensors (--resume / --retrain / --eval_model).") from exc
    return model.float(), target


def load_clip(spec: str, download_root: Optional[str] = None, image_resolution: Optional[int] = None,
              seed: int = 0) -> Tuple[CLIP, Dict[str, Any]]:
    """Load an fp32 CLIP from a ``--model`` spec (see the module docstring); returns ``(clip, source record)``.
    ``image_resolution`` sizes ``random:tiny``; ``seed`` seeds ``random:`` configurations."""
    if spec.startswith(RANDOM_PREFIX):
        model = random_clip(spec[len(RANDOM_PREFIX):], seed, image_resolution)
        return model, source_record(spec, model, seed=seed)
    if spec in clip.available_models():
        model, target = _load_named(spec, download_root)
        return model, source_record(spec, model, file=target)
    if os.path.isfile(spec):
        model = clip_from_state_dict(read_clip_file(spec), what=f"--model {spec}")
        return model, source_record(os.path.abspath(spec), model)
    folder = os.path.dirname(spec)
    if spec.endswith((".pt", ".pth")) or (folder and os.path.isdir(folder)):
        raise ClipWeightsNotFound(f"--model {spec}: no such file (expected an OpenAI CLIP file)")
    raise ValueError(f"--model {spec}: not a CLIP name ({', '.join(clip.available_models())}), an existing file, "
                     f"or one of {', '.join(RANDOM_PREFIX + n for n in CLIP_ARCHS)}")


def clip_sha256(model: CLIP, exclude: Iterable[str] = ()) -> str:
    """SHA-256 of a CLIP's tensors as fp32 (name, shape and values, names sorted), leaving out ``exclude``
    (the tensors CLIP-VG trains, which compact checkpoints store themselves)."""
    skip = set(exclude)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in skip:
            continue
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(data.shape)};".encode())
        digest.update(data.numpy().reshape(-1).view("uint8"))
    return digest.hexdigest()
