"""CLIPVG on tiny CLIPs: taps, freezing, init, masks, exact speed-ups, the loss, parameter report."""
import math

import pytest
import torch
import torchvision.transforms.functional as TF

from helpers_clip import TINY_IMSIZE, tiny_args, tiny_clip
from models import build_model, count_parameters, describe_parameters, vl_transformer
from benchmarks.reference_forward import (reference_encode_image, reference_encode_text, reference_forward,
                                          reference_fusion, reference_fusion_inputs)
from models.clip_vg import CLIPVG, default_tapped_layers, patch_padding_mask, resolve_tapped_layers
from models.loss import grounding_loss

SOT, EOT = 49406, 49407


QUERY_LEN = 32
# A small fusion FFN and query length keep these CPU tests fast; the default fusion is covered below and by
# tests/test_model_vitb16.py.
FAST_FLAGS = ("--vl_dim_feedforward", "256", "--max_query_len", str(QUERY_LEN))


def make_inputs(batch_lengths, imsize=TINY_IMSIZE, pad_right=(), seed=0, max_len=QUERY_LEN):
    """Images, masks (right padding per sample) and CLIP-like token rows with the given real lengths."""
    g = torch.Generator().manual_seed(seed)
    b = len(batch_lengths)
    img = torch.randn(b, 3, imsize, imsize, generator=g)
    mask = torch.zeros(b, imsize, imsize, dtype=torch.bool)
    for i, pad in enumerate(pad_right):
        if pad:
            mask[i, :, imsize - pad:] = True
            img[i, :, :, imsize - pad:] = 0
    text = torch.zeros(b, max_len, dtype=torch.long)
    for i, n in enumerate(batch_lengths):
        text[i, :n] = torch.randint(1, 49000, (n,), generator=g)
        text[i, 0], text[i, n - 1] = SOT, EOT
    return img, mask, text


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_args(*FAST_FLAGS)).eval()


def test_default_taps_follow_the_spec_table():
    assert default_tapped_layers(12) == [0, 3, 7, 11]
    assert default_tapped_layers(24) == [0, 7, 15, 23]
    assert default_tapped_layers(6) == [0, 1, 3, 5]
    assert default_tapped_layers(4) == [0, 1, 3]  # duplicates removed
    assert resolve_tapped_layers("3, 0", 12) == [0, 3]


@pytest.mark.parametrize("spec", ["0,12", "-1", "a,b"])
def test_bad_tapped_layers_name_the_flag(spec):
    with pytest.raises(ValueError, match="--tapped_layers"):
        resolve_tapped_layers(spec, 12)


def test_tapped_layers_flag_sets_the_projection_width():
    model = build_model(tiny_args("--tapped_layers", "1,2", *FAST_FLAGS))
    assert model.tapped_layers == [1, 2]
    assert model.ml_visu_proj.in_features == 2 * 128
    img, mask, text = make_inputs([4])
    assert model.encode_image(img).shape == (1, 1 + 16, 2 * 128)


def test_imsize_must_match_the_clip_grid():
    with pytest.raises(ValueError, match=r"--imsize 96.*patch 16.*use --imsize 64"):
        CLIPVG(tiny_clip(image_resolution=64), imsize=96)


def test_vl_hidden_dim_flag_must_match_the_text_width():
    with pytest.raises(ValueError, match="--vl_hidden_dim 512.*64"):
        build_model(tiny_args("--vl_hidden_dim", "512"))
    assert build_model(tiny_args()).hidden_dim == 64  # the default 512 is not "given": the width comes from CLIP


def test_shapes_and_dtypes_with_the_default_fusion():
    model = build_model(tiny_args()).eval()
    img, mask, text = make_inputs([5, 9, 3], pad_right=(0, 16, 8), max_len=77)
    out = model(img, mask, text)
    assert out.shape == (3, 4) and out.dtype == torch.float32
    assert bool(((out > 0) & (out < 1)).all())
    assert model.encode_image(img).shape == (3, 1 + 16, 3 * 128)
    assert model.encode_text(text[:, :9]).shape == (3, 9, 64)
    assert model.vl_pos_embed.num_embeddings == 16 + 1 + 77 + 1
    assert len(model.vl_transformer.encoder.layers) == 6
    assert model.vl_transformer.encoder.layers[0].linear1.out_features == 2048


def test_bad_inputs_are_reported(tiny_model):
    img, mask, text = make_inputs([4, 4])
    with pytest.raises(ValueError, match="img"):
        tiny_model(img[:, :, :32, :32], mask, text)
    with pytest.raises(ValueError, match=f"--max_query_len {QUERY_LEN}"):
        tiny_model(img, mask, torch.cat([text, text], 1))


def test_only_the_visual_positional_embedding_of_clip_trains(tiny_model):
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert [n for n in trainable if n.startswith("clip.")] == ["clip.visual.positional_embedding"]
    assert trainable[:5] == ["clip.visual.positional_embedding", "text_proj.weight", "text_proj.bias",
                             "reg_token.weight", "vl_pos_embed.weight"]
    assert trainable[-2:] == ["ml_visu_proj.weight", "ml_visu_proj.bias"]
    n_clip = sum(p.numel() for p in tiny_model.clip.parameters())
    n_pos = tiny_model.clip.visual.positional_embedding.numel()
    n_rest = sum(p.numel() for n, p in tiny_model.named_parameters() if not n.startswith("clip."))
    assert count_parameters(tiny_model) == (n_rest + n_pos, n_rest + n_clip)

    img, mask, text = make_inputs([4, 6])
    tiny_model.zero_grad(set_to_none=True)
    tiny_model(img, mask, text).sum().backward()
    pos_grad = tiny_model.clip.visual.positional_embedding.grad
    assert pos_grad is not None and float(pos_grad.abs().sum()) > 0
    assert all(p.grad is None for n, p in tiny_model.clip.named_parameters() if n != "visual.positional_embedding")
    assert not tiny_model.encode_text(text).requires_grad  # no trainable tensor in the text tower
    tiny_model.zero_grad(set_to_none=True)


def test_fusion_weights_are_xavier_uniform(tiny_model):
    for name, p in tiny_model.vl_transformer.named_parameters():
        if p.dim() > 1:
            p = p.detach()
            fan_out, fan_in = p.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert float(p.abs().max()) <= bound, name
            assert float(p.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1), name


def test_patch_mask_hand_checked_case():
    mask = torch.zeros(2, 224, 224, dtype=torch.bool)
    mask[0, :, 224 - 100:] = True  # columns 124..223 padded
    mask[1, :, 224 - 104:] = True  # columns 120..223: patch column 7 averages to exactly 0.5
    grid = patch_padding_mask(mask, 14).view(2, 14, 14)
    # Bilinear 224 -> 14 samples each patch column j between pixels 16j+7 and 16j+8 (weights 1/2, 1/2).
    assert grid[0].all(dim=0).tolist() == [False] * 8 + [True] * 6
    # 0.5 rounds half to even (to 0): column 7 stays visible; an antialiased resize would mask it.
    assert grid[1].all(dim=0).tolist() == [False] * 8 + [True] * 6
    assert bool((grid == grid[:, :1, :]).all())  # every row masks the same columns
    expected = TF.resize(mask.int(), [14, 14], antialias=False) != 0  # torchvision's integer resize
    assert torch.equal(grid, expected)


def test_masked_positions_do_not_influence_the_box(tiny_model):
    """Padding really masks: values at masked patch / text positions of the fused sequence change nothing."""
    img, mask, text = make_inputs([4, 9], pad_right=(32, 0))
    patch_mask = patch_padding_mask(mask, tiny_model.grid)
    length = tiny_model.query_length(text)
    base = tiny_model(img, mask, text)

    def scramble(positions):
        def hook(module, args, out):
            noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)) * 10
            return torch.where(positions[..., None], noise, out)
        return hook

    visu_positions = torch.cat([torch.zeros(2, 1, dtype=torch.bool), patch_mask], 1)
    for module, positions in ((tiny_model.ml_visu_proj, visu_positions),
                              (tiny_model.text_proj, text[:, :length] == 0)):
        handle = module.register_forward_hook(scramble(positions))
        try:
            assert torch.allclose(tiny_model(img, mask, text), base, atol=1e-6)
        finally:
            handle.remove()
    # Sanity: unmasked positions do matter.
    handle = tiny_model.text_proj.register_forward_hook(scramble(text[:, :length] != 0))
    try:
        assert not torch.allclose(tiny_model(img, mask, text), base, atol=1e-4)
    finally:
        handle.remove()


def test_a_query_does_not_depend_on_its_batch_or_padding_length(tiny_model):
    img, mask, text = make_inputs([4, 12], pad_right=(16, 0))
    together = tiny_model(img, mask, text)
    alone = tiny_model(img[:1], mask[:1], text[:1])
    shorter = tiny_model(img[:1], mask[:1], text[:1, :12])
    assert torch.allclose(together[:1], alone, atol=1e-5)
    assert torch.allclose(alone, shorter, atol=1e-5)


def _text_encodings(encode):
    """``encode(model, text)`` at the query's own length, then cut to the longest query (trimming is exact)."""
    def run(model, img, mask, text):
        length = CLIPVG.query_length(text)
        return encode(model, text)[:, :length]
    return run


# Each exact speed-up of the model's forward pass against the straightforward computation it replaces
# (benchmarks/reference_forward.py), part by part and as a whole: (reference, fast) functions of the inputs.
SPEEDUPS = {
    # The text tower cut to the longest query, causal SDPA blocks, without autograd, against CLIP's own blocks on
    # the text zero-padded to the context length.
    "trim_text": (_text_encodings(reference_encode_text),
                  lambda model, img, mask, text: model.encode_text(text[:, :CLIPVG.query_length(text)])),
    "text_no_grad": (lambda model, img, mask, text: reference_encode_text(model, text).detach(),
                     lambda model, img, mask, text: model.encode_text(text)),
    # The fusion's SDPA attention (every row) against its nn.MultiheadAttention modules.
    "sdpa_fusion": (lambda model, img, mask, text: reference_fusion(model.vl_transformer,
                                                                    *reference_fusion_inputs(model, img, mask, text)),
                    lambda model, img, mask, text: model.vl_transformer(*reference_fusion_inputs(model, img, mask, text))),
    # CLIP's blocks with SDPA and the folded QuickGELU MLP, image and (untrimmed) text.
    "sdpa_clip": (lambda model, img, mask, text: torch.cat([reference_encode_image(model, img).flatten(1),
                                                            reference_encode_text(model, text).flatten(1)], 1),
                  lambda model, img, mask, text: torch.cat([model.encode_image(img).flatten(1),
                                                            model.encode_text(text).flatten(1)], 1)),
    "all": (reference_forward, lambda model, img, mask, text: model(img, mask, text)),
}


@pytest.mark.parametrize("name", list(SPEEDUPS))
def test_each_exact_speedup_equals_the_reference(tiny_model, name):
    """Same outputs and same gradients for every trainable tensor."""
    img, mask, text = make_inputs([3, 11, 6], pad_right=(0, 24, 8), seed=3)
    text[1, 5] = 0  # a '!' (id 0) inside a query: masked, but the text tower must still run past it
    outs, grads = [], []
    for fn in SPEEDUPS[name]:
        tiny_model.zero_grad(set_to_none=True)
        out = fn(tiny_model, img, mask, text)
        if out.requires_grad:
            out.sum().backward()
        outs.append(out.detach())
        grads.append({n: q.grad.clone() for n, q in tiny_model.named_parameters() if q.grad is not None})
    tiny_model.zero_grad(set_to_none=True)
    assert outs[0].shape == outs[1].shape and torch.allclose(outs[0], outs[1], atol=1e-5)
    assert grads[0].keys() == grads[1].keys()
    if name in ("sdpa_clip", "all"):
        assert "clip.visual.positional_embedding" in grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def test_query_length_is_the_last_real_token_over_the_batch():
    text = torch.zeros(3, 77, dtype=torch.long)
    text[0, :4] = 5
    text[1, :2] = 5
    text[1, 6] = 7  # a zero token (id 0) at 2..5 inside the query
    assert CLIPVG.query_length(text) == 7
    assert CLIPVG.query_length(torch.zeros(2, 77, dtype=torch.long)) == 1


def test_train_mode_dropout_runs_and_eval_is_deterministic(tiny_model):
    img, mask, text = make_inputs([4, 5])
    tiny_model.train()
    try:
        out = tiny_model(img, mask, text)
        assert out.shape == (2, 4) and torch.isfinite(out).all()
    finally:
        tiny_model.eval()
    assert torch.equal(tiny_model(img, mask, text), tiny_model(img, mask, text))


def test_fusion_dropout_has_f_dropouts_distribution():
    """The fusion's ``dropout``: each element kept with probability 1 - p, kept ones scaled by exactly 1 / (1 - p),
    the rest zero, the same gradient mask; identity in eval mode and at p = 0."""
    torch.manual_seed(0)
    x = torch.randn(200, 1000, requires_grad=True)
    out = vl_transformer.dropout(x, 0.1, True)
    kept = out != 0
    assert abs(kept.double().mean().item() - 0.9) < 0.003  # 200,000 draws: 5 standard deviations
    assert torch.equal(out[kept], x[kept] * (1.0 / 0.9))
    out.sum().backward()
    assert torch.equal(x.grad, kept.float() * (1.0 / 0.9))
    assert vl_transformer.dropout(x, 0.1, False) is x and vl_transformer.dropout(x, 0.0, True) is x
    assert vl_transformer.dropout(x.bfloat16(), 0.1, True).dtype == torch.bfloat16  # the input's dtype, as F.dropout
    assert not vl_transformer.dropout(x, 1.0, True).any()


def test_grounding_loss_values():
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.4, 0.2, 0.4]])
    zero = grounding_loss(target.clone(), target)
    assert float(zero["loss"]) == pytest.approx(0.0, abs=1e-5)
    pred = target + torch.tensor([[0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    terms = grounding_loss(pred, target)
    assert float(terms["l1"]) == pytest.approx(0.1 / 2)  # summed over coordinates, mean over the batch
    # Sample 0: two 0.2 x 0.2 boxes shifted by 0.1: IoU = 0.02/0.06, hull 0.3 x 0.2 = union -> GIoU = IoU.
    assert float(terms["giou"]) == pytest.approx((1 - 1 / 3) / 2, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(float(terms["l1"] + terms["giou"]))
    with pytest.raises(ValueError, match="grounding_loss"):
        grounding_loss(pred[:, :3], target[:, :3])


def test_parameter_report_mentions_visu_proj(tiny_model):
    line = describe_parameters(tiny_model)
    trainable, total = count_parameters(tiny_model)
    assert line.startswith(f"trainable params: {trainable:,} of {total:,} (")
    assert f"visu_proj ({512 * 64 + 64:,} params" in line
