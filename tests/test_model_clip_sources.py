"""Where CLIP comes from: explicit random configurations, local OpenAI files, named models (offline: a clear error,
never random weights), and the weight hash compact checkpoints rely on."""
import os
import urllib.error
import urllib.request

import pytest
import torch

from helpers_clip import tiny_args, tiny_clip, write_tiny_clip_file
from helpers_hub import hub_environment
from models import build_model
from models.clip_backbone import (CLIP_ARCHS, ClipWeightsNotFound, arch_name, clip_dims, clip_sha256, load_clip,
                                  make_clip)
from utils.args import parse_args
from utils.errors import InputError
from utils.checkpoint import save_checkpoint


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_clip_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, record = load_clip("random:tiny", image_resolution=64)
    assert torch.equal(torch.get_rng_state(), state)
    second, _ = load_clip("random:tiny", image_resolution=64)
    other, _ = load_clip("random:tiny", image_resolution=64, seed=1)
    assert same_weights(first, second) and not same_weights(first, other)
    assert record["spec"] == "random:tiny" and record["seed"] == 0 and record["arch"] == "tiny"
    assert record["dims"]["image_resolution"] == 64 and first.visual.conv1.weight.dtype == torch.float32


def test_bad_random_specs():
    with pytest.raises(ValueError, match=r"random:nope.*random:ViT-B/16.*random:tiny"):
        load_clip("random:nope")
    with pytest.raises(ValueError, match=r"--imsize 70.*patch size 16"):
        load_clip("random:tiny", image_resolution=70)


@pytest.mark.parametrize("torchscript", [True, False], ids=["torchscript", "state_dict"])
def test_local_openai_clip_files_load_exactly(tmp_path, torchscript):
    path = str(tmp_path / "tiny-clip.pt")
    expected = write_tiny_clip_file(path, torchscript=torchscript, seed=2)
    model, record = load_clip(path)
    assert same_weights(model, expected)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert record["spec"] == os.path.abspath(path) and record["arch"] == "tiny"
    vg = build_model(tiny_args("--model", path))
    assert same_weights(vg.clip, expected) and vg.clip_source["spec"] == os.path.abspath(path)


def test_local_files_that_are_not_clip(tmp_path):
    with pytest.raises(ClipWeightsNotFound, match=r"--model .*missing\.pt: no such file"):
        load_clip(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pt: not a CLIP weights file"):
        load_clip(str(junk))
    resnet = {"visual.attnpool.c_proj.weight": torch.zeros(2, 2), "text_projection": torch.zeros(2, 2)}
    torch.save(resnet, str(tmp_path / "rn.pt"))
    with pytest.raises(ValueError, match="ResNet CLIP"):
        load_clip(str(tmp_path / "rn.pt"))
    vg = build_model(tiny_args())
    save_checkpoint(str(tmp_path / "vg.pth"), vg, None, None, 0, None, 0.0, full=True)
    with pytest.raises(ValueError, match=r"CLIP-VG checkpoint.*--eval_model"):
        load_clip(str(tmp_path / "vg.pth"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: an empty hub cache in offline mode, and any URL download fails at once (and is counted)."""
    attempts = []

    def refuse(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with hub_environment(str(tmp_path / "hf-home")):
        yield attempts


def test_named_clip_without_weights_stops_with_a_helpful_error(tmp_path, offline):
    root = str(tmp_path / "clip-cache")
    args = parse_args("train", ["--model", "ViT-B/16", "--clip_download_root", root])
    with pytest.raises(ClipWeightsNotFound) as err:
        build_model(args)
    message = str(err.value)
    for part in ("--model ViT-B/16", os.path.join(root, "ViT-B-16.pt"), "--clip_download_root",
                 "hf-hub:timm/vit_base_patch16_clip_224.openai", "--model PATH",
                 "python -m models.clip_backbone --model ViT-B/16 --output"):
        assert part in message, part
    assert offline == []  # HF_HUB_OFFLINE=1: no download tried at all; no random fallback

    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "ViT-B-16.pt"), "wb") as fh:
        fh.write(b"truncated download")
    with pytest.raises(ClipWeightsNotFound, match=r"ViT-B-16\.pt \(SHA-256 .* is not .*damaged or partial"):
        build_model(args)


def test_resnet_and_unknown_names_are_refused():
    with pytest.raises(InputError, match="ResNet CLIP; CLIP-VG needs a ViT"):
        load_clip("RN50")
    with pytest.raises(ValueError, match=r"ViT-X/99: not a CLIP name.*random:tiny"):
        load_clip("ViT-X/99")


def test_weight_hash_covers_the_frozen_tensors_only():
    model = tiny_clip()
    sha = clip_sha256(model, exclude=["visual.positional_embedding"])
    with torch.no_grad():
        model.visual.positional_embedding.add_(1.0)
    assert clip_sha256(model, exclude=["visual.positional_embedding"]) == sha
    with torch.no_grad():
        model.ln_final.bias.add_(1e-3)
    assert clip_sha256(model, exclude=["visual.positional_embedding"]) != sha


def test_arch_names():
    assert arch_name(clip_dims(tiny_clip(image_resolution=96))) == "tiny"
    with torch.device("meta"):
        assert arch_name(clip_dims(make_clip(CLIP_ARCHS["ViT-L/14"]))) == "ViT-L/14"
        custom = dict(CLIP_ARCHS["ViT-B/16"], vision_layers=6)
        assert arch_name(clip_dims(make_clip(custom))) == "custom"
