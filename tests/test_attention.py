"""[REG] attention maps: distributions over the keys, zero on padded patches and padding tokens, the same whatever
exact speed-ups reorder the fused tokens, and the box bitwise unchanged by recording them (inference --attention)."""
import json
import os

import pytest
import torch
from PIL import Image

import inference
from benchmarks.reference_forward import reference_encoder_layer, reference_fusion_inputs
from datasets.grounding import tokenize_queries
from datasets.transforms import EvalTransform
from helpers_world import world_with_checkpoint
from models import build_model_from_checkpoint
from models.attention import RegAttention
from models.clip_vg import patch_padding_mask
from utils.args import parse_args
from utils.checkpoint import load_checkpoint, load_model_state
from utils.errors import UsageError
from utils.run_setup import adopt_checkpoint_settings


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention")
    ckpt = world_with_checkpoint(str(root), n_train_pseudo=4, n_val=4, seed=5)["ckpt"]
    args = parse_args("inference", ["--eval_model", ckpt, "--device", "cpu"])
    loaded = load_checkpoint(ckpt)
    adopt_checkpoint_settings(args, loaded)
    model = build_model_from_checkpoint(loaded, args)
    load_model_state(model, loaded)
    model.eval()
    wide = str(root / "wide.png")     # 64x24: the canvas is padded above and below
    Image.effect_mandelbrot((64, 24), (-2, -1, 1, 1), 40).convert("RGB").save(wide)
    tall = str(root / "tall.png")     # 20x64: padded left and right
    Image.radial_gradient("L").resize((20, 64)).convert("RGB").save(tall)
    return {"ckpt": ckpt, "model": model, "args": args, "wide": wide, "tall": tall, "root": root}


def _batch(setup, paths, queries):
    transform = EvalTransform(setup["args"].imsize)
    samples = [transform(Image.open(p).convert("RGB"), torch.zeros(4)) for p in paths]
    tokens, rows, _ = tokenize_queries([q.lower() for q in queries], setup["args"].max_query_len)
    return (torch.stack([s.img for s in samples]), torch.stack([s.mask for s in samples]),
            tokens[rows].to(torch.int64))


@pytest.mark.parametrize("layer", [0, -1])
def test_weights_are_distributions_zero_on_padding_and_independent_of_token_pruning(setup, layer):
    model = setup["model"]
    img, mask, text = _batch(setup, [setup["wide"], setup["tall"]], ["the big red circle on the left", "dog"])
    with RegAttention(model, layer) as fast:
        box = model(img, mask, text)
    # the same layer's map on the straightforward computation's full, unpruned fused sequence
    reference = RegAttention(model, layer)
    src, key_padding_mask, pos = reference_fusion_inputs(model, img, mask, text)
    layers = model.vl_transformer.encoder.layers
    with torch.no_grad():
        for fusion_layer in layers[:layer % len(layers)]:
            src = reference_encoder_layer(fusion_layer, src, pos, key_padding_mask)
    reference.record(src, pos, key_padding_mask)
    (a,), (b,) = fast.maps, reference.maps
    assert torch.allclose(a.total(), torch.ones(2), atol=1e-5)
    padded = patch_padding_mask(mask, model.grid).view(2, model.grid, model.grid)
    assert padded.any(dim=(1, 2)).all() and (~padded).any(dim=(1, 2)).all()
    assert (a.patches[padded] == 0).all() and (a.patches[~padded] > 0).all()
    assert ((text == 0) == (a.text == 0)).all(), "zero exactly on the padding tokens"
    # the pruned, reordered fast path and the full reference path give the same map, slot by slot
    for part in ("patches", "text", "cls", "reg"):
        assert torch.allclose(getattr(a, part), getattr(b, part), atol=1e-5), part
    # recording does not change the box
    assert torch.equal(model(img, mask, text), box)


def test_a_layer_outside_the_model_is_refused(setup):
    with pytest.raises(ValueError, match="--attention_layer 7: the model has"):
        RegAttention(setup["model"], 7)


def test_inference_attention_picture_leaves_the_box_bitwise_unchanged(setup, tmp_path, capsys):
    base = ["--eval_model", setup["ckpt"], "--device", "cpu", "--image", setup["wide"], "--query", "the left shape"]
    plain = inference.main(base)
    picture = str(tmp_path / "att.png")
    with_map = inference.main([*base, "--attention", picture])
    assert with_map[0]["box_xyxy"] == plain[0]["box_xyxy"] and with_map[0]["attention"] == picture
    with Image.open(picture) as drawn:
        assert drawn.format == "PNG" and drawn.width > 400
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed[0]["box_xyxy"] == printed[1]["box_xyxy"]
    with pytest.raises(UsageError, match="--attention .*att.jpg: the attention picture is a PNG"):
        inference.main([*base, "--attention", str(tmp_path / "att.jpg")])
    assert not os.path.exists(tmp_path / "att.jpg")
