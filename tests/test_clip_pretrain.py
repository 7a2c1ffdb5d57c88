"""Tiny-CLIP pretraining: learning, OpenAI-format round trip through clip.load, caching, determinism, errors."""
import json
import os
import random

import clip
import pytest
import torch
from PIL import Image, ImageDraw

from demo.tiny_clip import (TinyClipConfig, encode_text, load_caption_corpus, main, normalize_images,
                                  pretrain_tiny_clip, retrieval_accuracy, save_openai_checkpoint, split_corpus)

# clip.load and these tests read OpenAI's TorchScript format through torch.jit.load, which torch marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

RES = 32
CONFIG = TinyClipConfig(embed_dim=32, vision_width=64, vision_layers=2, vision_patch_size=8, text_width=64,
                        text_layers=1)
TRAIN = dict(image_resolution=RES, config=CONFIG, epochs=30, batch_size=24, lr=2e-3, holdout_fraction=0.25,
             seed=0)
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 230)}
SHAPES = ("circle", "square")


def write_corpus(folder, n=96, seed=0):
    """n single-shape images (non-square, so the centre crop matters) captioned 'a <colour> <shape>'."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(folder, "pretrain_images"), exist_ok=True)
    pairs = []
    for i in range(n):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        grey = rng.randint(90, 170)
        img = Image.new("RGB", (56, 48), (grey, grey, grey))
        draw = ImageDraw.Draw(img)
        for _ in range(40):
            x, y = rng.randint(0, 55), rng.randint(0, 47)
            draw.point((x, y), fill=(grey + 40, grey + 40, grey + 40))
        s = rng.randint(16, 28)
        x, y = rng.randint(4, 52 - s), rng.randint(0, 48 - s)
        (draw.ellipse if shape == "circle" else draw.rectangle)([x, y, x + s, y + s], fill=COLOURS[colour])
        name = f"pre_{i:06d}.png"
        img.save(os.path.join(folder, "pretrain_images", name))
        pairs.append({"image": name, "caption": f"a {colour} {shape}"})
    path = os.path.join(folder, "caption_corpus.json")
    with open(path, "w") as f:
        json.dump({"image_dir": "pretrain_images", "pairs": pairs}, f)
    return path


@pytest.fixture(scope="module")
def corpus_json(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def trained(corpus_json, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model") / "tiny_clip.pt")
    return out, pretrain_tiny_clip(corpus_json, out, **TRAIN)


def test_pretraining_lowers_loss_and_beats_chance_and_random_init(trained):
    _, stats = trained
    assert stats["final_loss"] < 0.7 * stats["first_epoch_loss"]
    acc, init, chance = stats["retrieval"], stats["retrieval_random_init"], stats["retrieval"]["chance"]
    assert stats["n_heldout"] == 24 and stats["n_train"] == 72
    for key in ("image_to_text_top1", "text_to_image_top1"):
        assert acc[key] >= chance + 0.2, (key, acc, chance)
        assert acc[key] > init[key], (key, acc, init)


def test_saved_file_is_an_openai_checkpoint_that_clip_load_rebuilds(trained, corpus_json):
    path, stats = trained
    saved = torch.jit.load(path, map_location="cpu").state_dict()
    assert set(saved) == set(CONFIG.build(RES).state_dict())
    assert saved["visual.conv1.weight"].dtype == torch.float16  # OpenAI's fp16 weights
    model, preprocess = clip.load(path, device="cpu")
    assert model.visual.input_resolution == RES
    loaded = model.state_dict()
    assert set(loaded) == set(saved)
    for key, value in loaded.items():
        assert value.dtype == torch.float32, key
        assert torch.equal(value, saved[key].float()), key
    # The stats describe the saved model: its held-out retrieval is reproduced from the file.
    corpus = load_caption_corpus(corpus_json, RES)
    _, heldout = split_corpus(corpus, TRAIN["holdout_fraction"], TRAIN["seed"])
    assert retrieval_accuracy(model, heldout) == stats["retrieval"]
    # The preloaded images are exactly what clip.load's preprocess makes of the files.
    with Image.open(heldout.image_paths[0]) as im:
        expected = preprocess(im)
    assert torch.allclose(normalize_images(heldout.images[:1])[0], expected, atol=1e-6)


def test_repo_model_loader_reads_the_pretrained_file(trained):
    """The demo passes the file as --model PATH; the repo's loader must rebuild the same fp32 CLIP."""
    from models.clip_backbone import load_clip

    path, _ = trained
    model, record = load_clip(path)
    reference, _ = clip.load(path, device="cpu")
    assert record["dims"]["image_resolution"] == RES
    ours, theirs = model.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_trimmed_text_encoding_equals_clips_own():
    """Pretraining encodes text only up to the batch's longest caption; the causal mask makes that CLIP's
    ``encode_text`` up to float rounding, for every caption length in the batch."""
    torch.manual_seed(0)
    model = TinyClipConfig(embed_dim=32, vision_width=64, vision_layers=1, text_width=64, text_layers=2).build(32)
    tokens = clip.tokenize(["a red circle", "there is a small blue square to the left of a large green ring", "x"])
    ours, theirs = encode_text(model, tokens), model.encode_text(tokens)
    assert ours.shape == theirs.shape == (3, 32)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_save_round_trip_gives_the_same_model_outputs(tmp_path):
    torch.manual_seed(1)
    model = CONFIG.build(RES)
    path = str(tmp_path / "m.pt")
    save_openai_checkpoint(model, path)
    loaded, _ = clip.load(path, device="cpu")
    images, text = torch.randn(2, 3, RES, RES), clip.tokenize(["a red circle", "a blue square"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
        assert torch.equal(model.encode_text(text), loaded.encode_text(text))
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_rerun_is_cached_and_a_changed_setting_or_corpus_retrains(corpus_json, tmp_path):
    out = str(tmp_path / "clip.pt")
    quick = dict(TRAIN, epochs=1)
    first = pretrain_tiny_clip(corpus_json, out, **quick)
    assert first["cached"] is False and os.path.isfile(out + ".json")
    mtime = os.path.getmtime(out)
    again = pretrain_tiny_clip(corpus_json, out, **quick)
    assert again["cached"] is True and again["retrieval"] == first["retrieval"]
    assert os.path.getmtime(out) == mtime
    assert pretrain_tiny_clip(corpus_json, out, **dict(quick, seed=1))["cached"] is False

    other = write_corpus(str(tmp_path / "other"), n=16)
    with open(other) as f:
        data = json.load(f)
    data["pairs"][0]["caption"] = "a purple triangle"
    with open(other, "w") as f:
        json.dump(data, f)
    out2 = str(tmp_path / "clip2.pt")
    assert pretrain_tiny_clip(other, out2, **quick)["cached"] is False
    data["pairs"][0]["caption"] = "a yellow triangle"
    with open(other, "w") as f:
        json.dump(data, f)
    assert pretrain_tiny_clip(other, out2, **quick)["cached"] is False


def test_same_seed_gives_identical_weights(corpus_json, tmp_path):
    quick = dict(TRAIN, epochs=2)
    a = pretrain_tiny_clip(corpus_json, str(tmp_path / "a.pt"), **quick)
    b = pretrain_tiny_clip(corpus_json, str(tmp_path / "b.pt"), **quick)
    wa = torch.jit.load(str(tmp_path / "a.pt")).state_dict()
    wb = torch.jit.load(str(tmp_path / "b.pt")).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["loss_per_epoch"] == b["loss_per_epoch"]


def test_cli_prints_the_stats_json(corpus_json, tmp_path, capsys):
    out = str(tmp_path / "cli.pt")
    main(["--corpus", corpus_json, "--output", out, "--image_resolution", "32", "--epochs", "1",
          "--batch_size", "16", "--seed", "3", "--max_seconds", "60"])
    stats = json.loads(capsys.readouterr().out)
    assert stats["output"] == os.path.abspath(out) and stats["settings"]["seed"] == 3
    assert stats["epochs_run"] == 1 and os.path.isfile(out)


def test_max_seconds_shortens_the_schedule(corpus_json, tmp_path):
    stats = pretrain_tiny_clip(corpus_json, str(tmp_path / "t.pt"), **dict(TRAIN, epochs=50, max_seconds=1e-3))
    assert stats["epochs_run"] == 1


def test_bad_inputs_get_clear_errors(corpus_json, tmp_path):
    with open(corpus_json) as f:
        data = json.load(f)
    data["image_dir"] = os.path.join(os.path.dirname(corpus_json), data["image_dir"])
    data["pairs"][5]["image"] = "missing.png"
    bad = tmp_path / "caption_corpus.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"pair 5: cannot read image .*missing\.png"):
        load_caption_corpus(str(bad), RES)
    data["pairs"][7]["caption"] = ""
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="pair 7"):
        load_caption_corpus(str(bad), RES)
    with pytest.raises(ValueError, match="vision_width=96"):
        TinyClipConfig(vision_width=96)
    with pytest.raises(ValueError, match="patch size"):
        TinyClipConfig().build(100)
