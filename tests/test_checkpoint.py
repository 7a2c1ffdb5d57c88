"""Checkpoint I/O on tiny models: atomic writers, compact and full round trips, CLIP rebuild with hash checks,
official-style files, and the errors users see."""
import argparse
import json
import os
import shutil

import pytest
import torch

from helpers_clip import TINY_IMSIZE, tiny_args, write_tiny_clip_file
from models import build_model, build_model_from_checkpoint
from models.clip_backbone import ClipWeightsNotFound
from utils.checkpoint import (canonical_state_dict, compact_keys, load_checkpoint, load_model_state,
                              official_layout, save_checkpoint)
from utils.errors import InputError
from utils.io import atomic_torch_save, atomic_write_bytes, atomic_write_text, write_json, write_jsonl

FAST_FLAGS = ("--vl_dim_feedforward", "256", "--max_query_len", "16")


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(batch, 3, TINY_IMSIZE, TINY_IMSIZE, generator=g)
    mask = torch.zeros(batch, TINY_IMSIZE, TINY_IMSIZE, dtype=torch.bool)
    mask[0, :, 40:] = True
    text = torch.zeros(batch, 16, dtype=torch.long)
    text[:, :5] = torch.randint(1, 49000, (batch, 5), generator=g)
    return img, mask, text


def trained_model(*flags):
    """A tiny model after one AdamW step (so every trainable tensor differs from its initial value)."""
    torch.manual_seed(0)
    args = tiny_args(*FAST_FLAGS, *flags)
    model = build_model(args)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 5)
    img, mask, text = inputs()
    model(img, mask, text).sum().backward()
    optimizer.step()
    scheduler.step()
    return model.eval(), optimizer, scheduler, args


def reload(path, args):
    ckpt = load_checkpoint(path)
    model = build_model_from_checkpoint(ckpt, args)
    report = load_model_state(model, ckpt)
    return model.eval(), ckpt, report


def test_atomic_writers(tmp_path):
    out = tmp_path / "sub"
    write_json(str(out / "a.json"), {"x": 1})
    write_jsonl(str(out / "b.jsonl"), [{"i": 0}, {"i": 1}])
    atomic_write_text(str(out / "c.txt"), "hello")
    atomic_write_bytes(str(out / "d.bin"), b"\x00\x01")
    atomic_torch_save({"t": torch.arange(3)}, str(out / "e.pth"))
    assert json.loads((out / "a.json").read_text()) == {"x": 1}
    assert [json.loads(line) for line in (out / "b.jsonl").read_text().splitlines()] == [{"i": 0}, {"i": 1}]
    assert (out / "c.txt").read_text() == "hello" and (out / "d.bin").read_bytes() == b"\x00\x01"
    assert torch.equal(torch.load(str(out / "e.pth"))["t"], torch.arange(3))
    with pytest.raises(Exception):
        atomic_torch_save({"f": lambda: 0}, str(out / "e.pth"))  # a failed write leaves the old file intact
    assert torch.equal(torch.load(str(out / "e.pth"))["t"], torch.arange(3))
    assert sorted(os.listdir(out)) == ["a.json", "b.jsonl", "c.txt", "d.bin", "e.pth"]  # no temp files left


def test_compact_checkpoint_round_trip(tmp_path):
    model, optimizer, scheduler, args = trained_model()
    args.device = torch.device("cpu")
    path = str(tmp_path / "checkpoint.pth")
    save_checkpoint(path, model, optimizer, scheduler, 4, args, 0.25, extra={"best_accu": 0.3})
    restored, ckpt, report = reload(path, tiny_args(*FAST_FLAGS))
    assert report["kind"] == "compact" and report["ignored"] == []
    assert list(ckpt["model"]) == compact_keys(model)
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].device == "cpu"
    assert (ckpt["epoch"], ckpt["val_accu"], ckpt["best_accu"]) == (4, 0.25, 0.3)
    assert ckpt["format"]["kind"] == "compact" and ckpt["clip_source"]["spec"] == "random:tiny"
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
    img, mask, text = inputs()
    assert torch.equal(model(img, mask, text), restored(img, mask, text))
    fresh = torch.optim.AdamW([p for p in restored.parameters() if p.requires_grad], lr=1e-3)
    fresh.load_state_dict(ckpt["optimizer"])
    assert ckpt["lr_scheduler"]["last_epoch"] == 1
    with pytest.raises(ValueError, match="would overwrite"):
        save_checkpoint(path, model, None, None, 4, args, 0.25, extra={"model": {}})


def test_full_checkpoint_has_the_official_layout_and_reloads_identically(tmp_path):
    model, _, _, args = trained_model()
    path = str(tmp_path / "full.pth")
    save_checkpoint(path, model, None, None, 1, args, 0.5, full=True)
    raw = load_checkpoint(path)
    assert list(raw["model"]) == list(official_layout(model.state_dict()))
    assert raw["model"]["visu_proj.weight"].shape == (64, 512) and not raw["model"]["visu_proj.weight"].any()
    alias = raw["model"]["image_encoder_clip_vg.conv1.weight"]
    assert alias.data_ptr() == raw["model"]["clip.visual.conv1.weight"].data_ptr()  # stored once
    assert "optimizer" not in raw
    restored, ckpt, report = reload(path, tiny_args(*FAST_FLAGS))
    assert report["kind"] == "full" and sorted(report["ignored"]) == ["visu_proj.bias", "visu_proj.weight"]
    img, mask, text = inputs()
    assert torch.equal(model(img, mask, text), restored(img, mask, text))
    # The CLIP tensors match the recorded source, so the model keeps it: compact saves stay rebuildable.
    assert restored.clip_source["spec"] == "random:tiny"
    compact = str(tmp_path / "compact.pth")
    save_checkpoint(compact, restored, None, None, 1, args, 0.5)
    again, _, _ = reload(compact, tiny_args(*FAST_FLAGS))
    assert torch.equal(again(img, mask, text), restored(img, mask, text))


def test_compact_checkpoint_rebuilds_clip_from_a_file_and_checks_its_hash(tmp_path):
    clip_file = str(tmp_path / "clip.pt")
    write_tiny_clip_file(clip_file, torchscript=False, seed=0)
    shutil.copy(clip_file, str(tmp_path / "copy.pt"))
    model, _, _, args = trained_model("--model", clip_file)
    path = str(tmp_path / "run" / "best.pth")
    save_checkpoint(path, model, None, None, 0, args, 0.0)
    plain = tiny_args(*FAST_FLAGS)  # --model random:tiny given, but the recorded file is used while it exists
    restored, ckpt, _ = reload(path, plain)
    assert ckpt["clip_source"]["spec"] == os.path.abspath(clip_file)
    img, mask, text = inputs()
    assert torch.equal(model(img, mask, text), restored(img, mask, text))

    write_tiny_clip_file(clip_file, torchscript=False, seed=1)  # other weights at the recorded path
    with pytest.raises(ValueError, match=r"not the ones the checkpoint was trained with"):
        build_model_from_checkpoint(load_checkpoint(path), plain)
    os.remove(clip_file)
    no_model_flag = tiny_args(*FAST_FLAGS)
    no_model_flag.given_flags.remove("model")
    with pytest.raises(ClipWeightsNotFound, match=r"compact checkpoint.*clip\.pt.*Pass --model"):
        build_model_from_checkpoint(load_checkpoint(path), no_model_flag)
    with pytest.raises(ValueError, match="sha256"):
        build_model_from_checkpoint(load_checkpoint(path), plain)  # a given --model with other weights
    restored, _, _ = reload(path, tiny_args(*FAST_FLAGS, "--model", str(tmp_path / "copy.pt")))
    assert torch.equal(model(img, mask, text), restored(img, mask, text))


def official_style_file(model, path):
    """What the official train script saves: fp16 CLIP tensors, aliases, visu_proj, 4-group optimizer, no
    clip_source."""
    state = {k: (v.half() if k.startswith("clip.") else v.clone()) for k, v in model.state_dict().items()}
    layout = official_layout(state)
    layout["visu_proj.weight"].normal_()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model": layout, "epoch": 3, "val_accu": 0.4,
                "args": argparse.Namespace(model="ViT-B/16", device="cuda", imsize=TINY_IMSIZE)}, path)
    return {k: v.float() for k, v in state.items()}


def test_official_style_checkpoint_provides_clip_and_compact_saves_point_back_to_it(tmp_path):
    model, _, _, args = trained_model()
    official = str(tmp_path / "official" / "best_checkpoint.pth")
    expected = official_style_file(model, official)
    restored, _, report = reload(official, tiny_args(*FAST_FLAGS))
    assert report["kind"] == "full" and report["aliases"] > 0
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in expected.items())
    assert restored.clip_source["spec"] == "checkpoint:" + os.path.abspath(official)
    img, mask, text = inputs()
    out = restored(img, mask, text)

    # A compact checkpoint would have to name the official file as its CLIP source, and a checkpoint's record never
    # makes the loader open a file: the save is full, so it provides its CLIP itself.
    compact = str(tmp_path / "run" / "checkpoint.pth")
    save_checkpoint(compact, restored, None, None, 4, args, 0.5)
    assert load_checkpoint(compact)["format"]["kind"] == "full"
    again, _, _ = reload(compact, tiny_args(*FAST_FLAGS))
    assert torch.equal(again(img, mask, text), out)
    beside = str(tmp_path / "official" / "checkpoint.pth")
    save_checkpoint(beside, restored, None, None, 4, args, 0.5)
    assert load_checkpoint(beside)["format"]["kind"] == "full"


class NotAllowed:
    pass


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.pth"):
        load_checkpoint(str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: not a torch checkpoint file"):
        load_checkpoint(str(junk))
    clip_file = str(tmp_path / "ViT-tiny.pt")
    write_tiny_clip_file(clip_file, torchscript=True)
    with pytest.raises(ValueError, match=r"TorchScript archive.*--model"):
        load_checkpoint(clip_file)
    for name, obj in (("dict.pth", {"epoch": 1}), ("other.pth", {"model": {"fc.weight": torch.zeros(2)}}),
                      ("list.pth", [1, 2])):
        torch.save(obj, str(tmp_path / name))
        with pytest.raises(ValueError, match=rf"{name}: not a CLIP-VG checkpoint"):
            load_checkpoint(str(tmp_path / name))
    torch.save({"model": {}, "extra": NotAllowed()}, str(tmp_path / "unsafe.pth"))
    with pytest.raises(ValueError, match=r"unsafe\.pth: refused by the safe loader.*NotAllowed"):
        load_checkpoint(str(tmp_path / "unsafe.pth"))


@pytest.mark.parametrize("flags, message", [
    (("--max_query_len", "8"), r"vl_pos_embed has 34 rows in the checkpoint, this model 26.*--max_query_len"),
    (("--tapped_layers", "1,2"), r"ml_visu_proj input 384 vs 256.*--tapped_layers"),
    (("--vl_enc_layers", "2"), r"unexpected \['vl_transformer\.encoder\.layers\.2.*--vl_enc_layers"),
])
def test_shape_and_key_mismatches_raise_one_clear_error(tmp_path, flags, message):
    model, _, _, args = trained_model()
    path = str(tmp_path / "ckpt.pth")
    save_checkpoint(path, model, None, None, 0, args, 0.0)
    ckpt = load_checkpoint(path)
    other = build_model_from_checkpoint(ckpt, tiny_args(*FAST_FLAGS, *flags))
    with pytest.raises(ValueError, match=message):
        load_model_state(other, ckpt)


def test_alias_rules():
    model, _, _, _ = trained_model()
    layout = official_layout({k: v.clone() for k, v in model.state_dict().items()})
    canonical, report = canonical_state_dict(layout)
    assert canonical.keys() == model.state_dict().keys() and report["aliases_standing_in"] == 0
    only_aliases = {k: v for k, v in layout.items() if not k.startswith("clip.") or k == "clip.logit_scale"}
    canonical, report = canonical_state_dict(only_aliases)
    assert canonical.keys() == model.state_dict().keys() and report["aliases_standing_in"] == report["aliases"]
    layout["text_encoder_clip_vg.ln_final.weight"] = layout["clip.ln_final.weight"] + 1
    with pytest.raises(ValueError, match="text_encoder_clip_vg.ln_final.weight differs from clip.ln_final.weight"):
        canonical_state_dict(layout)
