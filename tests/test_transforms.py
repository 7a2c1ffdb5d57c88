"""Eval transform on hand-checked cases, train transform invariants over many seeds (docs/method.md#data)."""
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageEnhance

from datasets.transforms import (DIRECTION_WORDS, IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform,
                                 canvas_to_original, has_direction_word, train_scales)
from utils.box_ops import cxcywh_to_xyxy

RED = (220, 20, 20)
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def scene(width=640, height=480, box=(200, 150, 360, 300), seed=0):
    """Green/blue noise background with one solid red rectangle at ``box`` (xyxy)."""
    rs = np.random.RandomState(seed)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 1] = rs.randint(90, 200, (height, width))
    pixels[..., 2] = rs.randint(60, 200, (height, width))
    pixels[..., 0] = rs.randint(0, 40, (height, width))
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = RED
    return Image.fromarray(pixels), torch.tensor(box, dtype=torch.float32)


def canvas_box(out, imsize):
    return cxcywh_to_xyxy(out.box) * imsize


def test_scales_and_direction_words():
    assert train_scales(224, True) == [224, 192, 160, 128, 96, 64, 32]
    assert train_scales(224, False) == [224]
    assert train_scales(96, True) == [96, 64, 32]  # sizes <= 0 left out
    assert DIRECTION_WORDS == ("left", "right", "top", "bottom", "middle")
    assert has_direction_word("the guy on the leftmost") and not has_direction_word("red car")


def test_torchvision_resize_of_pil_is_pil_bilinear():
    img, _ = scene(97, 61)
    ours = F.resize(img, [40, 64])
    assert np.array_equal(np.asarray(ours), np.asarray(img.resize((64, 40), Image.BILINEAR)))


def test_pil_colour_ops_match_image_enhance():
    img, _ = scene(40, 30)
    for op, enhancer in ((F.adjust_brightness, ImageEnhance.Brightness), (F.adjust_contrast, ImageEnhance.Contrast),
                         (F.adjust_saturation, ImageEnhance.Color)):
        assert np.array_equal(np.asarray(op(img, 1.3)), np.asarray(enhancer(img).enhance(1.3)))


def test_eval_landscape_hand_checked():
    img = Image.new("RGB", (100, 50), RED)
    out = EvalTransform(64)(img, torch.tensor([10.0, 5.0, 60.0, 45.0]))
    # ratio 0.64: 100x50 -> 64x32, centred: 16 rows of padding above and below.
    assert out.img.shape == (3, 64, 64) and out.img.dtype == torch.float32
    assert out.mask.dtype == torch.bool and out.mask.shape == (64, 64)
    assert out.mask[:16].all() and out.mask[48:].all() and not out.mask[16:48].any()
    assert torch.all(out.img[:, :16] == 0) and torch.all(out.img[:, 48:] == 0)
    expected = (torch.tensor(RED).view(3, 1, 1) / 255.0 - MEAN) / STD
    assert torch.allclose(out.img[:, 16:48], expected.expand(3, 32, 64), atol=1e-6)
    # box: xyxy 6.4, 3.2, 38.4, 28.8, shifted down 16 -> cxcywh (22.4, 32, 32, 25.6) / 64
    assert torch.allclose(out.box, torch.tensor([22.4, 32.0, 32.0, 25.6]) / 64, atol=1e-6)
    assert torch.allclose(out.transform, torch.tensor([0.64, 0.0, 16.0, 0.0]))
    back = canvas_to_original(canvas_box(out, 64), out.transform)
    assert torch.allclose(back, torch.tensor([10.0, 5.0, 60.0, 45.0]), atol=1e-3)


def test_eval_odd_padding_goes_to_the_far_side():
    img = Image.new("RGB", (45, 100), RED)  # portrait: 64 x round(28.8) = 29 wide, 35 columns of padding
    out = EvalTransform(64)(img, torch.tensor([0.0, 0.0, 45.0, 100.0]))
    columns = (~out.mask).any(dim=0).nonzero().flatten()
    assert columns[0] == 17 and columns[-1] == 17 + 29 - 1  # round(17.5 - 0.1) = 17 left, 18 right
    assert torch.allclose(out.transform, torch.tensor([0.64, 17.0, 0.0, 0.0]))
    assert torch.allclose(canvas_box(out, 64), torch.tensor([17.0, 0.0, 17.0 + 28.8, 64.0]), atol=1e-4)


def test_sliver_image_keeps_one_pixel_row():
    out = EvalTransform(64)(Image.new("RGB", (500, 1), RED), torch.tensor([0.0, 0.0, 500.0, 1.0]))
    assert int((~out.mask).sum()) == 64  # 64 x round(0.128) -> 64 x 1, where the reference crashes


def test_canvas_to_original_batches():
    transform = torch.tensor([[0.5, 10.0, 0.0, 0.0], [2.0, 0.0, 4.0, 0.0]])
    boxes = torch.tensor([[10.0, 0.0, 20.0, 10.0], [0.0, 4.0, 8.0, 12.0]])
    assert torch.equal(canvas_to_original(boxes, transform), torch.tensor([[0.0, 0, 20, 20], [0, 0, 4, 4]]))


def _check_invariants(out, imsize, box):
    # mask matches the pasted region: one rectangle of image, exact zeros everywhere else
    inside = ~out.mask
    rows, cols = inside.any(dim=1).nonzero().flatten(), inside.any(dim=0).nonzero().flatten()
    assert int(inside.sum()) == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert torch.all(out.img[:, out.mask] == 0)
    assert torch.all(out.img[:, inside].abs().sum(dim=0) > 0)
    # the box stays on the object: the pasted pixels under the box (minus a resampling margin) are red
    x1, y1, x2, y2 = canvas_box(out, imsize).tolist()
    assert 0 <= x1 < x2 <= imsize and 0 <= y1 < y2 <= imsize
    mx, my = 1 + 0.15 * (x2 - x1), 1 + 0.15 * (y2 - y1)
    under = out.img[:, int(y1 + my):int(np.ceil(y2 - my)), int(x1 + mx):int(np.ceil(x2 - mx))] * STD + MEAN
    red, green, blue = under[0], under[1], under[2]
    assert under.numel() > 0 and torch.all(red > green + 0.1) and torch.all(red > blue + 0.1)
    # and maps back onto the original box
    assert torch.allclose(canvas_to_original(canvas_box(out, imsize), out.transform), box, atol=0.05)


@pytest.mark.parametrize("flags", [dict(aug_crop=True, aug_scale=True, aug_translate=True, aug_blur=True),
                                   dict()])
def test_train_invariants_over_seeds(flags):
    img, box = scene()
    transform = TrainTransform(96, **flags)
    branches, crops = set(), 0
    for seed in range(40):
        out = transform(img, box, "red block", random.Random(seed))
        branches.add(out.branch)
        crops += out.crop is not None
        _check_invariants(out, 96, box)
    assert branches == ({"resize", "crop"} if flags else {"resize"})
    assert (crops >= 5) if flags else crops == 0


def test_train_resize_branch_scales_and_centring():
    img, box = scene()
    transform = TrainTransform(96, aug_scale=True)
    for seed in range(20):
        out = transform(img, box, "red block", random.Random(seed))
        scale, pad_x, pad_y = out.transform[:3].tolist()
        assert round(640 * scale) in train_scales(96, True)
        h, w = round(480 * scale), round(640 * scale)
        assert (pad_x, pad_y) == (round((96 - w) / 2 - 0.1), round((96 - h) / 2 - 0.1))


def test_direction_words_disable_the_crop_branch():
    img, box = scene()
    transform = TrainTransform(96, aug_crop=True)
    for word in DIRECTION_WORDS:
        for seed in range(15):
            out = transform(img, box, f"red block {word}", random.Random(seed))
            assert out.branch == "resize" and round(640 * float(out.transform[0])) == 96
    crops = [transform.choose_branch("red block", random.Random(s)) for s in range(200)]
    assert 70 < crops.count("crop") < 130  # p = 0.5
    assert all(TrainTransform(96).choose_branch("red block", random.Random(s)) == "resize" for s in range(50))


def test_translate_moves_the_paste_and_seeds_reproduce():
    img, box = scene()
    transform = TrainTransform(96, aug_translate=True)
    offsets = {tuple(transform(img, box, "red", random.Random(s)).transform[1:3].tolist()) for s in range(10)}
    assert len(offsets) > 3
    a, b = (transform(img, box, "red", random.Random(7)) for _ in range(2))
    assert torch.equal(a.img, b.img) and torch.equal(a.box, b.box) and torch.equal(a.mask, b.mask)


def test_crop_acceptance_correct_versus_official_quirk():
    box = torch.tensor([300.0, 50.0, 400.0, 100.0])  # centre (350, 75)
    correct, quirk = TrainTransform(96, aug_crop=True), TrainTransform(96, aug_crop=True, official_crop_quirk=True)
    # crop top=10, left=320, 200x200: cuts the box's left part; the quirk test (350 > 10 and 75 > 320) rejects it
    assert not correct.accepts_crop(box, 10, 320, 200, 200) and not quirk.accepts_crop(box, 10, 320, 200, 200)
    # crop top=60, left=0, 450x450: cuts the box's top; the quirk (350 > 60 and 75 > 0) accepts it
    assert quirk.accepts_crop(box, 60, 0, 450, 450) and not correct.accepts_crop(box, 60, 0, 450, 450)
    assert correct.accepts_crop(box, 0, 0, 450, 450)


def test_train_transform_requires_an_rng():
    img, box = scene(64, 64, (10, 10, 30, 30))
    with pytest.raises(ValueError, match="random.Random"):
        TrainTransform(32)(img, box, "red")


def test_colour_jitter_is_on_by_default_and_off_with_no_aug_color():
    from utils.args import parse_args
    img, box = scene()
    plain = EvalTransform(96)(img, box, "red block")
    jittered = [TrainTransform(96)(img, box, "red block", random.Random(s)).img for s in range(10)]
    assert sum(not torch.allclose(x, plain.img) for x in jittered) >= 5  # p = 0.8 per sample
    for seed in range(10):
        out = TrainTransform(96, aug_color=False)(img, box, "red block", random.Random(seed))
        assert torch.allclose(out.img, plain.img) and torch.equal(out.mask, plain.mask)
    assert parse_args("train", []).aug_color is True
    assert parse_args("train", ["--no-aug_color"]).aug_color is False


def test_train_transform_without_augmentation_is_the_eval_transform():
    assert TrainTransform(96).random and TrainTransform(96, aug_color=False, aug_translate=True).random
    img, box = scene(80, 50, (10, 5, 60, 45))
    plain = TrainTransform(96, aug_color=False)
    assert not plain.random
    expected = EvalTransform(96)(img, box)
    for out in (plain(img, box, "red block"), plain.canvas(img).place(box), EvalTransform(96).canvas(img).place(box)):
        assert torch.equal(out.img, expected.img) and torch.equal(out.mask, expected.mask)
        assert torch.equal(out.box, expected.box) and torch.equal(out.transform, expected.transform)
    with pytest.raises(ValueError, match="augmentation is on"):
        TrainTransform(96).canvas(img)
