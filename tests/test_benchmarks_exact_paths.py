"""The model's exact speed-ups compute the reference function (benchmarks/reference_forward.py): pruning masked
tokens from the fusion (and the [REG]-only last layer), the folded QuickGELU MLP, and the in-place residual path
without autograd."""
import pytest
import torch
from clip.model import ResidualAttentionBlock

from benchmarks._common import synthetic_batch
from helpers_clip import TINY_IMSIZE, tiny_args
from models import build_model
from benchmarks.reference_forward import reference_forward, reference_fusion, reference_fusion_inputs
from models.clip_vg import clip_block_sdpa, clip_mlp, keep_unmasked, patch_padding_mask
from models.vl_transformer import VLTransformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_args("--vl_dim_feedforward", "128", "--max_query_len", "20")).eval()


def coco_batch(n=6, seed=1):
    """COCO-shaped padding (landscape, portrait, square: rows keep different token counts) and a zero token
    inside one query."""
    batch = synthetic_batch(n, TINY_IMSIZE, 20, torch.Generator().manual_seed(seed))
    batch["text"][2, 2] = 0
    return batch


def model_forward(model, img, img_mask, text):
    return model(img, img_mask, text)


def pruned_fusion_only(model, img, img_mask, text):
    """The reference forward pass with only the fusion pruned: the masked tokens leave the sequence and the last
    layer computes the [REG] row alone (the model's own fusion module)."""
    src, mask, pos = reference_fusion_inputs(model, img, img_mask, text)
    keep = int((~mask).sum(dim=1).max())
    kept_src, kept_mask, kept_pos = keep_unmasked(src, mask, pos, keep)
    out = model.vl_transformer(kept_src, kept_mask, kept_pos, out_rows=1)
    return model.bbox_embed(out[:, 0]).sigmoid()


def outputs_and_grads(model, batch, forward):
    model.zero_grad(set_to_none=True)
    out = forward(model, batch["img"], batch["img_mask"], batch["text"])
    out.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


@pytest.mark.parametrize("forward", [model_forward, pruned_fusion_only], ids=["fast", "prune_only"])
def test_pruned_fusion_gives_the_reference_boxes_and_gradients(model, forward):
    batch = coco_batch()
    base_out, base_grads = outputs_and_grads(model, batch, reference_forward)
    out, grads = outputs_and_grads(model, batch, forward)
    assert torch.allclose(out, base_out, atol=1e-5)
    assert grads.keys() == base_grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], base_grads[name], atol=1e-5, rtol=1e-4), name


def test_pruning_keeps_each_rows_unmasked_tokens_in_order():
    src = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    mask = torch.tensor([[False, True, False, True, False], [False, False, True, True, True]])
    pos = torch.arange(5, dtype=torch.float32)[:, None] * 10
    kept_src, kept_mask, kept_pos = keep_unmasked(src, mask, pos, 3)
    assert kept_src[..., 0].tolist() == [[0, 2, 4], [5, 6, 7]]
    assert kept_mask.tolist() == [[False, False, False], [False, False, True]]
    assert kept_pos[..., 0].tolist() == [[0, 20, 40], [0, 10, 20]]


def test_the_forward_pass_reads_back_one_pair_of_lengths(model):
    batch = coco_batch()

    patches = patch_padding_mask(batch["img_mask"], model.grid)
    length, keep = model.sequence_lengths(batch["text"], patches)
    assert length == model.query_length(batch["text"])
    expected = max(2 + int((t != 0).sum()) + int((~p).sum()) for t, p in zip(batch["text"], patches))
    assert keep == expected


@pytest.mark.parametrize("fusion_fn", ["model", "reference"])
def test_fusion_out_rows_are_the_first_rows_of_the_full_output(fusion_fn):
    torch.manual_seed(0)
    fusion = VLTransformer(d_model=32, nhead=4, num_layers=3, dim_feedforward=64, dropout=0.1).eval()
    src, pos = torch.randn(3, 9, 32), torch.randn(9, 32)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, 5:] = True
    full = fusion(src, mask, pos) if fusion_fn == "model" else reference_fusion(fusion, src, mask, pos)
    assert torch.allclose(fusion(src, mask, pos, out_rows=1), full[:, :1], atol=1e-6)
    assert torch.allclose(fusion(src, mask, pos, out_rows=4), full[:, :4], atol=1e-6)


def test_folded_quickgelu_mlp_equals_clips_mlp():
    torch.manual_seed(0)
    block = ResidualAttentionBlock(64, 2)
    x = torch.randn(2, 7, 64, requires_grad=True)
    ref = block.mlp(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    out = clip_mlp(block.mlp, x)
    (g_out,) = torch.autograd.grad(out.sum(), x)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(g_out, g_ref, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_clip_block_without_autograd_equals_clips_block_and_leaves_its_input(causal):
    torch.manual_seed(0)
    mask = torch.full((7, 7), float("-inf")).triu(1) if causal else None
    block = ResidualAttentionBlock(64, 2, attn_mask=mask)
    x = torch.randn(2, 7, 64)
    before = x.clone()
    with torch.no_grad():
        fast = clip_block_sdpa(block, x, causal)
        reference = block(x.transpose(0, 1)).transpose(0, 1)
    assert torch.equal(x, before)
    recorded = clip_block_sdpa(block, x.clone().requires_grad_(True), causal)
    assert torch.allclose(fast, reference, atol=1e-5)
    assert torch.allclose(fast, recorded.detach(), atol=1e-6)


def test_eval_boxes_without_autograd_match_the_reference(model):
    batch = coco_batch(seed=4)
    with torch.no_grad():
        fast = model(batch["img"], batch["img_mask"], batch["text"])
        reference = reference_forward(model, batch["img"], batch["img_mask"], batch["text"])
        src, mask, pos = reference_fusion_inputs(model, batch["img"], batch["img_mask"], batch["text"])
        unpruned = model.bbox_embed(model.vl_transformer(src, mask, pos)[:, 0]).sigmoid()
    assert torch.allclose(fast, reference, atol=1e-5) and torch.allclose(fast, unpruned, atol=1e-5)
