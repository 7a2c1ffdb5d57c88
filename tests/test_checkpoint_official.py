"""A synthetic official ViT-B/16 checkpoint (every key and shape of the official key list, random values, CLIP
tensors fp16 and shared with their alias keys, the rest fp32) loads with only visu_proj ignored and predicts what
an independent functional re-statement of the official forward pass predicts."""
import argparse
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from helpers_clip import official_key_reference
from models import build_model_from_checkpoint
from utils.args import parse_args
from utils.checkpoint import convert_official_optimizer_state, convert_official_scheduler_state, load_model_state

ALIASES = {"image_encoder_clip_vg.": "clip.visual.", "text_encoder_clip_vg.": "clip."}
EMBEDDINGS = ("positional_embedding", "token_embedding.weight", "reg_token.weight", "vl_pos_embed.weight")


def random_tensor(key, shape, gen):
    """Values at a sensible scale (unit-variance activations), so the predictions are far from constant."""
    noise = torch.randn(shape, generator=gen)
    if not shape:
        return torch.tensor(math.log(1 / 0.07))
    if key.endswith(EMBEDDINGS):
        return 0.1 * noise
    if ("ln" in key or "norm" in key) and key.endswith("weight"):
        return 1 + 0.1 * noise
    if key.endswith("bias") or len(shape) == 1:
        return 0.1 * noise
    if key.endswith(("text_projection", "visual.proj")):
        return noise * shape[0] ** -0.5
    return noise * math.prod(shape[1:]) ** -0.5


def synthetic_official_state(arch="ViT-B/16", seed=0):
    shapes = official_key_reference()[arch]["state_dict_keys_and_shapes"]
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in shapes.items():
        if not key.startswith(tuple(ALIASES)):
            value = random_tensor(key, shape, gen)
            state[key] = value.half() if key.startswith("clip.") else value
    for key in shapes:
        for alias, target in ALIASES.items():
            if key.startswith(alias):
                state[key] = state[target + key[len(alias):]]  # the same tensor object, as torch.save shares it
    return state


def official_forward(state, img, mask, text, taps=(0, 3, 7, 11), fusion_heads=8):
    """The official ML_CLIP_VG forward (sequence-first, CLIP blocks with nn.MultiheadAttention semantics, the
    mask resized by torchvision as an integer tensor without antialiasing), on fp32 copies of ``state``."""
    sd = {k: v.float() for k, v in state.items()}

    def block(prefix, x, heads, attn_mask=None):
        y = F.layer_norm(x, x.shape[-1:], sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"])
        y = F.multi_head_attention_forward(
            y, y, y, x.shape[-1], heads, sd[prefix + "attn.in_proj_weight"], sd[prefix + "attn.in_proj_bias"],
            None, None, False, 0.0, sd[prefix + "attn.out_proj.weight"], sd[prefix + "attn.out_proj.bias"],
            training=False, need_weights=False, attn_mask=attn_mask)[0]
        x = x + y
        y = F.layer_norm(x, x.shape[-1:], sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"])
        y = F.linear(y, sd[prefix + "mlp.c_fc.weight"], sd[prefix + "mlp.c_fc.bias"])
        y = y * torch.sigmoid(1.702 * y)
        return x + F.linear(y, sd[prefix + "mlp.c_proj.weight"], sd[prefix + "mlp.c_proj.bias"])

    batch = img.shape[0]
    # Image encoder (the official MultiLevel_ImageEncoder_modified, read through its alias keys).
    v = "image_encoder_clip_vg."
    conv = sd[v + "conv1.weight"]
    x = F.conv2d(img, conv, stride=conv.shape[-1])
    grid = x.shape[-1]
    x = x.reshape(batch, x.shape[1], -1).permute(0, 2, 1)
    cls = sd[v + "class_embedding"] + torch.zeros(batch, 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + sd[v + "positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], sd[v + "ln_pre.weight"], sd[v + "ln_pre.bias"]).permute(1, 0, 2)
    kept = []
    for i in range(max(taps) + 1):
        x = block(f"{v}transformer.resblocks.{i}.", x, x.shape[-1] // 64)
        if i in taps:
            kept.append(x)
    image_features = torch.cat(kept, dim=2).permute(1, 0, 2)
    # Text encoder (TextEncoder_modified): all 77 positions, CLIP's causal mask.
    t = "text_encoder_clip_vg."
    x = F.embedding(text, sd[t + "token_embedding.weight"]) + sd[t + "positional_embedding"]
    x = x.permute(1, 0, 2)
    n = x.shape[0]
    causal = torch.full((n, n), float("-inf")).triu_(1)
    layers = len({k.split(".")[3] for k in sd if k.startswith(t + "transformer.resblocks.")})
    for i in range(layers):
        x = block(f"{t}transformer.resblocks.{i}.", x, x.shape[-1] // 64, causal)
    x = x.permute(1, 0, 2)
    x = F.layer_norm(x, x.shape[-1:], sd[t + "ln_final.weight"], sd[t + "ln_final.bias"])
    text_features = x @ sd[t + "text_projection"]
    # Fusion.
    visu = F.linear(image_features, sd["ml_visu_proj.weight"], sd["ml_visu_proj.bias"]).permute(1, 0, 2)
    words = F.linear(text_features, sd["text_proj.weight"], sd["text_proj.bias"]).permute(1, 0, 2)
    reg = sd["reg_token.weight"].unsqueeze(1).repeat(1, batch, 1)
    src = torch.cat([reg, words, visu], dim=0)
    visu_mask = TF.resize(mask, [grid, grid], antialias=False).to(torch.bool).flatten(1)
    text_mask = ~(text != 0)
    zeros = torch.zeros(batch, 1, dtype=torch.bool)
    key_mask = torch.cat([zeros, text_mask, zeros, visu_mask], dim=1)
    pos = sd["vl_pos_embed.weight"].unsqueeze(1).repeat(1, batch, 1)
    d = src.shape[-1]
    layers = len({k.split(".")[3] for k in sd if k.startswith("vl_transformer.encoder.layers.")})
    for i in range(layers):
        p = f"vl_transformer.encoder.layers.{i}."
        q = src + pos
        y = F.multi_head_attention_forward(
            q, q, src, d, fusion_heads, sd[p + "self_attn.in_proj_weight"], sd[p + "self_attn.in_proj_bias"],
            None, None, False, 0.0, sd[p + "self_attn.out_proj.weight"], sd[p + "self_attn.out_proj.bias"],
            training=False, key_padding_mask=key_mask, need_weights=False)[0]
        src = F.layer_norm(src + y, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        y = F.linear(F.relu(F.linear(src, sd[p + "linear1.weight"], sd[p + "linear1.bias"])),
                     sd[p + "linear2.weight"], sd[p + "linear2.bias"])
        src = F.layer_norm(src + y, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
    h = src[0]
    h = F.relu(F.linear(h, sd["bbox_embed.layers.0.weight"], sd["bbox_embed.layers.0.bias"]))
    h = F.relu(F.linear(h, sd["bbox_embed.layers.1.weight"], sd["bbox_embed.layers.1.bias"]))
    return F.linear(h, sd["bbox_embed.layers.2.weight"], sd["bbox_embed.layers.2.bias"]).sigmoid()


def official_inputs():
    """One padded sample (a batch of one keeps this full-size CPU test fast; batching is covered elsewhere)."""
    gen = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, 224, 224, dtype=torch.int32)
    mask[0, :, 120:] = 1  # patch column 7 resizes to exactly 0.5: rounds to 0 (visible)
    mask[0, 184:, :] = 1
    img = torch.randn(1, 3, 224, 224, generator=gen) * (1 - mask[:, None])
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :12] = torch.randint(1, 49000, (12,), generator=gen)
    text[0, 0], text[0, 4], text[0, 11] = 49406, 0, 49407  # a '!' (id 0) inside: masked, as the official does
    return img, mask, text


def test_official_vitb16_checkpoint_loads_and_predicts_like_the_official_forward():
    state = synthetic_official_state("ViT-B/16")
    ckpt = {"model": state, "epoch": 9, "val_accu": 0.5,
            "args": argparse.Namespace(model="ViT-B/16", imsize=224, max_query_len=77, device="cuda")}
    args = parse_args("eval", [])
    model = build_model_from_checkpoint(ckpt, args)  # CLIP from the checkpoint: no download, no --model lookup
    report = load_model_state(model, ckpt)
    assert report["kind"] == "full"
    assert sorted(report["ignored"]) == ["visu_proj.bias", "visu_proj.weight"]
    assert report["aliases"] == sum(k.startswith(tuple(ALIASES)) for k in state)
    assert report["loaded"] == len(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key].float()), key

    img, mask, text = official_inputs()
    model.eval()
    shapes = {}

    def record(name):
        def hook(module, args, out):
            shapes[name] = tuple(args[0].shape)
        return hook

    hooks = [model.ml_visu_proj.register_forward_hook(record("visual")),
             model.text_proj.register_forward_hook(record("text"))]
    with torch.no_grad():
        ours = model(img, mask.bool(), text)
        expected = official_forward(state, img, mask, text)
    for hook in hooks:
        hook.remove()
    assert shapes == {"visual": (1, 197, 4 * 768), "text": (1, 12, 512)}  # text trimmed to the longest query
    assert ours.shape == (1, 4) and ours.dtype == torch.float32
    assert float((expected - 0.5).abs().max()) > 1e-2  # not a constant output: the check is not vacuous
    assert torch.allclose(ours, expected, atol=1e-5), (ours, expected)


def test_official_optimizer_state_converts_to_our_single_group():
    """Official AdamW: 4 groups, the first with every trainable tensor in named_parameters order, visu_proj's
    weight and bias at entries 1 and 2 (never stepped: unused); ours drops those two."""
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4)),
            torch.nn.Parameter(torch.randn(2, 2))]
    visu = [torch.nn.Parameter(torch.randn(5, 5)), torch.nn.Parameter(torch.randn(5))]
    official_order = [ours[0], *visu, *ours[1:]]
    opt = torch.optim.AdamW([{"params": official_order}, {"params": [], "lr": 1e-5}, {"params": [], "lr": 1e-5},
                             {"params": [], "lr": 1e-5}], lr=2.5e-4, weight_decay=1e-4)
    official_sched = torch.optim.lr_scheduler.StepLR(opt, 60)
    for _ in range(2):
        for p in ours:
            p.grad = torch.randn_like(p)
        opt.step()
    converted = convert_official_optimizer_state(opt.state_dict())
    assert len(converted["param_groups"]) == 1 and converted["param_groups"][0]["params"] == [0, 1, 2]
    mine = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in ours], lr=1.0)
    mine.load_state_dict(converted)
    assert mine.param_groups[0]["lr"] == 2.5e-4 and mine.param_groups[0]["weight_decay"] == 1e-4
    for p_new, p_old in zip(mine.param_groups[0]["params"], ours):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(mine.state[p_new][k], opt.state[p_old][k])
    with pytest.raises(ValueError, match="not an official CLIP-VG one"):
        convert_official_optimizer_state(mine.state_dict())

    official_sched.step()
    sched = torch.optim.lr_scheduler.StepLR(mine, 60)
    sched.load_state_dict(convert_official_scheduler_state(official_sched.state_dict()))
    assert sched.last_epoch == 1 and sched.base_lrs == [2.5e-4] and len(sched.get_last_lr()) == 1
