"""The real backbone sizes: ViT-B/16 built at full size (random weights), ViT-B/32 and ViT-L/14 on the meta device,
checked against the official key list (tests/data/official_checkpoint_keys.json: every key and shape of an official
checkpoint)."""
import os
import warnings

import pytest
import torch

from helpers_clip import official_key_reference
from models import build_model, count_parameters, describe_parameters
from models.clip_backbone import CLIP_ARCHS, make_clip
from models.clip_vg import CLIPVG
from utils.args import parse_args
from utils.checkpoint import IGNORED_KEYS, compact_keys, official_layout, save_checkpoint

def visu_proj_size(arch):
    shapes = official_key_reference()[arch]["state_dict_keys_and_shapes"]
    return sum(torch.Size(shapes[k]).numel() for k in IGNORED_KEYS)


@pytest.fixture(scope="module")
def vitb16():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = parse_args("train", ["--model", "random:ViT-B/16"])
    torch.manual_seed(0)
    return build_model(args).eval()


def test_vitb16_parameter_counts_are_the_official_ones_minus_visu_proj(vitb16):
    ref = official_key_reference()["ViT-B/16"]
    assert visu_proj_size("ViT-B/16") == 512 * 512 + 512 == 262_656
    assert count_parameters(vitb16) == (21_570_308, 171_039_749)
    assert count_parameters(vitb16) == (ref["n_trainable_parameters"] - 262_656,
                                        ref["n_parameters_unique"] - 262_656)
    assert "21,832,964 of 171,302,405 there" in describe_parameters(vitb16)


def test_vitb16_trainable_set_and_key_layout_match_the_official_model(vitb16):
    ref = official_key_reference()["ViT-B/16"]
    trainable = [n for n, p in vitb16.named_parameters() if p.requires_grad]
    assert set(trainable) == set(ref["trainable_parameter_names"]) - set(IGNORED_KEYS)
    layout = {k: list(v.shape) for k, v in official_layout(vitb16.state_dict()).items()}
    assert layout == ref["state_dict_keys_and_shapes"]


@pytest.mark.parametrize("arch", ["ViT-B/32", "ViT-L/14"])
def test_other_backbones_on_the_meta_device(arch):
    ref = official_key_reference()[arch]
    with torch.device("meta"):
        model = CLIPVG(make_clip(CLIP_ARCHS[arch]), imsize=224)
    visu = visu_proj_size(arch)
    assert count_parameters(model) == (ref["n_trainable_parameters"] - visu, ref["n_parameters_unique"] - visu)
    assert ({n for n, p in model.named_parameters() if p.requires_grad}
            == set(ref["trainable_parameter_names"]) - set(IGNORED_KEYS))
    layout = {k: list(v.shape) for k, v in official_layout(model.state_dict()).items()}
    assert layout == ref["state_dict_keys_and_shapes"]
    taps = {"ViT-B/32": [0, 3, 7, 11], "ViT-L/14": [0, 7, 15, 23]}[arch]
    assert model.tapped_layers == taps
    assert model.hidden_dim == {"ViT-B/32": 512, "ViT-L/14": 768}[arch]
    assert model.grid == {"ViT-B/32": 7, "ViT-L/14": 16}[arch]
    with torch.device("meta"):  # shapes only: the forward pass on meta tensors
        img = torch.empty(2, 3, 224, 224)
        mask = torch.empty(2, 224, 224, dtype=torch.bool)
        text = torch.empty(2, 77, dtype=torch.long)
        n_tokens = 1 + model.grid ** 2
        assert model.encode_image(img).shape == (2, n_tokens, 4 * CLIP_ARCHS[arch]["vision_width"])
        assert model.encode_text(text).shape == (2, 77, model.hidden_dim)
        out = model(img, mask, text)  # on meta tensors the lengths stay static (trimming reads values)
        assert out.shape == (2, 4) and out.dtype == torch.float32


def test_vitb16_compact_model_checkpoint_is_well_under_100_mb(vitb16, tmp_path):
    path = str(tmp_path / "best_checkpoint.pth")
    save_checkpoint(path, vitb16, None, None, 0, None, 0.0)
    assert os.path.getsize(path) < 100 * 1024 ** 2
    ckpt = torch.load(path, weights_only=True)
    assert list(ckpt["model"]) == compact_keys(vitb16)
    assert [k for k in ckpt["model"] if k.startswith("clip.")] == ["clip.visual.positional_embedding"]
    assert ckpt["clip_source"]["spec"] == "random:ViT-B/16" and len(ckpt["clip_source"]["sha256"]) == 64
    assert "optimizer" not in ckpt
