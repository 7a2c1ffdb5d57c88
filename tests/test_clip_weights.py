"""CLIP weights from where researchers hold them: transformers and open_clip layouts in folders and in a Hugging Face
hub cache (offline), named models through the cache, the prefetch command, and files read as data only."""
import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile

import clip
import pytest
import torch

from helpers_clip import tiny_clip, write_tiny_clip_file
from helpers_hub import (TINY_HF_IMSIZE, hub_environment, open_clip_config, put_in_hub_cache, save_open_clip_folder,
                         tiny_transformers_clip)
from models import clip_backbone
from models.clip_backbone import CLIP_ARCHS, ClipWeightsNotFound, clip_dims, load_clip, main as prefetch_main
from utils.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LATER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def transformers_folder(tmp_path_factory):
    """(transformers CLIPModel, its save_pretrained folder)."""
    model = tiny_transformers_clip(seed=0)
    folder = str(tmp_path_factory.mktemp("hf") / "tiny-clip")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture
def hub(tmp_path):
    """An empty hub cache used as by a process started with HF_HOME=<tmp>/hf-home HF_HUB_OFFLINE=1."""
    with hub_environment(str(tmp_path / "hf-home")) as cache:
        yield cache


def same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def features(model):
    torch.manual_seed(1)
    image = torch.randn(3, 3, TINY_HF_IMSIZE, TINY_HF_IMSIZE)
    tokens = clip.tokenize(["a red circle", "the small square on the left", "what is above the blue one"])
    return image, tokens


def test_transformers_folder_computes_the_features_of_transformers_clipmodel(transformers_folder):
    reference, folder = transformers_folder
    model, record = load_clip(folder)
    image, tokens = features(model)
    with torch.no_grad():
        want_image = reference.get_image_features(pixel_values=image)
        want_text = reference.get_text_features(input_ids=tokens)
        want_image = getattr(want_image, "pooler_output", want_image)
        want_text = getattr(want_text, "pooler_output", want_text)
        got_image, got_text = model.encode_image(image), model.encode_text(tokens)
    assert got_image.shape == (3, 24) and got_text.shape == (3, 24)
    assert want_image.std() > 0.1 and not torch.allclose(want_text[0], want_text[1])
    torch.testing.assert_close(got_image, want_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_text, want_text, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.logit_scale, reference.logit_scale.detach())
    # Head counts come from config.json (OpenAI's width // 64 rule would give 0 heads for these widths).
    assert record["dims"]["vision_heads"] == 3 and record["dims"]["transformer_heads"] == 2
    assert record["spec"] == os.path.abspath(folder) and record["origin"]["kind"] == "local"
    assert record["origin"]["file"].endswith("model.safetensors")


def test_hub_cache_in_both_layouts_offline(fp16_exact_transformers_folder, hub, tmp_path):
    _, folder = fp16_exact_transformers_folder
    expected, _ = load_clip(folder)
    assert hub == str(tmp_path / "hf-home" / "hub")  # HF_HOME read by huggingface_hub itself
    put_in_hub_cache(hub, "acme/tiny-clip-hf", folder, COMMIT)
    oc_folder = save_open_clip_folder(expected.state_dict(), str(tmp_path / "oc"), open_clip_config(
        clip_dims(expected)))
    put_in_hub_cache(hub, "acme/tiny-clip-oc", oc_folder, COMMIT)

    for repo, file in (("acme/tiny-clip-hf", "model.safetensors"),
                       ("acme/tiny-clip-oc", "open_clip_model.safetensors")):
        model, record = load_clip(f"hf-hub:{repo}")
        assert same_tensors(model, expected), repo  # the open_clip copy is fp16, widened exactly
        assert record["origin"] == {"kind": "hf-hub", "repo": repo, "revision": COMMIT, "file": file}
        pinned, _ = load_clip(f"hf-hub:{repo}@{COMMIT}")
        assert same_tensors(pinned, model)
        # A hub snapshot folder is a folder like any other.
        snapshot = os.path.join(hub, "models--" + repo.replace("/", "--"), "snapshots", COMMIT)
        assert same_tensors(load_clip(snapshot)[0], expected)


@pytest.fixture(scope="module")
def fp16_exact_transformers_folder(tmp_path_factory):
    """The tiny transformers CLIP with fp16-representable values (so an fp16 open_clip copy holds the same)."""
    model = tiny_transformers_clip(seed=0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())
    folder = str(tmp_path_factory.mktemp("hf16") / "tiny-clip")
    model.save_pretrained(folder)
    return model, folder


def test_open_clip_and_transformers_copies_of_one_model_agree(fp16_exact_transformers_folder, tmp_path):
    _, folder = fp16_exact_transformers_folder
    expected, _ = load_clip(folder)
    oc = save_open_clip_folder(expected.state_dict(), str(tmp_path / "oc"), open_clip_config(clip_dims(expected)))
    model, _ = load_clip(oc)  # stored fp16, widened exactly
    assert same_tensors(model, expected) and model.visual.conv1.weight.dtype == torch.float32
    no_gelu = save_open_clip_folder(expected.state_dict(), str(tmp_path / "gelu"),
                                    open_clip_config(clip_dims(expected), quick_gelu=False))
    with pytest.raises(InputError, match=r"gelu.*open_clip config without \"quick_gelu\": true"):
        load_clip(no_gelu)


def test_named_models_resolve_through_the_hub_cache(hub, tmp_path, monkeypatch):
    tiny = tiny_clip(seed=3)
    tiny16 = {k: v.half().float() for k, v in tiny.state_dict().items()}
    folder = save_open_clip_folder(tiny16, str(tmp_path / "oc"), open_clip_config(clip_dims(tiny)))
    # Under the ViT-B/16 repository a snapshot of another architecture is refused, naming the source.
    put_in_hub_cache(hub, clip_backbone.NAMED_HUB_REPOS["ViT-B/16"], folder, COMMIT)
    with pytest.raises(InputError, match=r"--model ViT-B/16: hf-hub:timm/vit_base_patch16_clip_224\.openai .*holds a "
                                         r"tiny CLIP .*not ViT-B/16"):
        load_clip("ViT-B/16", download_root=str(tmp_path / "clip-root"))
    # ViT-B/32 at the tiny size (so the test stays small): found in the cache, recorded with repo, commit, file.
    monkeypatch.setitem(CLIP_ARCHS, "ViT-B/32", {k: v for k, v in clip_dims(tiny).items() if k != "vision_heads"})
    put_in_hub_cache(hub, clip_backbone.NAMED_HUB_REPOS["ViT-B/32"], folder, COMMIT)
    model, record = load_clip("ViT-B/32", download_root=str(tmp_path / "clip-root"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny16.items())
    assert record["spec"] == "ViT-B/32" and record["origin"] == {
        "kind": "hf-hub", "repo": "timm/vit_base_patch32_clip_224.openai", "revision": COMMIT,
        "file": "open_clip_model.safetensors"}
    # OpenAI's file under --clip_download_root comes first when its SHA-256 is the one in the URL.
    root = tmp_path / "clip-root"
    root.mkdir()
    openai_file = str(root / "ViT-B-32.pt")
    from_file = write_tiny_clip_file(openai_file, torchscript=True, seed=4)
    with open(openai_file, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    monkeypatch.setitem(clip.clip._MODELS, "ViT-B/32", f"https://openaipublic.example/clip/models/{sha}/ViT-B-32.pt")
    model, record = load_clip("ViT-B/32", download_root=str(root))
    assert same_tensors(model, from_file) and record["origin"]["kind"] == "openai-file"
    with open(openai_file, "ab") as fh:
        fh.write(b"damaged")
    model, record = load_clip("ViT-B/32", download_root=str(root))  # damaged: next source, the hub cache
    assert record["origin"]["kind"] == "hf-hub"


def test_nothing_found_names_every_place_and_the_fixes(hub, tmp_path):
    root = str(tmp_path / "clip-root")
    with pytest.raises(ClipWeightsNotFound) as err:
        load_clip("ViT-L/14@336px", download_root=root)
    message = str(err.value)
    assert "\n" not in message
    for part in (os.path.join(root, "ViT-L-14-336px.pt"), "hf-hub:timm/vit_large_patch14_clip_336.openai",
                 os.path.join(hub, "models--timm--vit_large_patch14_clip_336.openai"),
                 clip.clip._MODELS["ViT-L/14@336px"], "HF_HUB_OFFLINE=1",
                 "python -m models.clip_backbone --model ViT-L/14@336px --output", "--model PATH", "HF_ENDPOINT"):
        assert part in message, part
    with pytest.raises(ClipWeightsNotFound, match=r"--model hf-hub:nobody/no-such-clip: no CLIP weights found.*"
                                                  r"models--nobody--no-such-clip.*HF_ENDPOINT"):
        load_clip("hf-hub:nobody/no-such-clip")
    with hub_environment(str(tmp_path / "hf-home"), extra={"HF_ENDPOINT": "https://hub-mirror.example"}):
        with pytest.raises(ClipWeightsNotFound, match=r"endpoint https://hub-mirror\.example, HF_HUB_OFFLINE=1"):
            load_clip("hf-hub:nobody/no-such-clip")


def test_bad_sources_are_refused_with_the_reason(transformers_folder, tmp_path):
    reference, folder = transformers_folder
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    os.link(os.path.join(folder, "model.safetensors"), no_config / "model.safetensors")
    with pytest.raises(InputError, match=r"no-config.*model\.safetensors without config\.json"):
        load_clip(str(no_config))
    truncated = tmp_path / "cut.safetensors"
    data = open(os.path.join(folder, "model.safetensors"), "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.safetensors: not a readable safetensors file, truncated"):
        load_clip(str(truncated))
    for change, reason in ((dict(hidden_act="gelu"), r"text_config hidden_act 'gelu'; clip\.model\.CLIP computes "
                                                      "quick_gelu"),
                           (dict(layer_norm_eps=1e-6), r"text_config layer_norm_eps 1e-06; clip\.model\.CLIP uses "
                                                       r"1e-5"),
                           (dict(eos_token_id=2000), r"eos_token_id 2000 is not the largest token id")):
        other = str(tmp_path / f"bad-{sorted(change)[0]}")
        tiny_transformers_clip(seed=0, **change).save_pretrained(other)
        with pytest.raises(InputError, match=reason):
            load_clip(other)
    resnet = {"visual.attnpool.c_proj.weight": torch.zeros(2, 2), "visual.layer1.0.conv1.weight": torch.zeros(1)}
    from safetensors.torch import save_file
    save_file(resnet, str(tmp_path / "rn.safetensors"))
    with pytest.raises(InputError, match=r"rn\.safetensors.*a ResNet CLIP; CLIP-VG needs a ViT CLIP"):
        load_clip(str(tmp_path / "rn.safetensors"))


class WritesMarker:
    """Unpickling this would create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_files_run_nothing(tmp_path):
    marker = str(tmp_path / "ran")
    evil_pickle = str(tmp_path / "evil.pt")
    torch.save({"visual.proj": WritesMarker(marker)}, evil_pickle)
    with pytest.raises(InputError, match=r"evil\.pt: refused by the safe loader") as err:
        load_clip(evil_pickle)
    assert "\n" not in str(err.value)
    # A TorchScript-looking archive whose data.pkl would run code and whose code/ TorchScript would too.
    archive = str(tmp_path / "evil-jit.pt")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("evil/constants.pkl", pickle.dumps(()))
        zf.writestr("evil/data.pkl", pickle.dumps(WritesMarker(marker), protocol=2))
        zf.writestr("evil/code/__torch__.py", "import os\nos.system('touch ran')\n")
        zf.writestr("evil/version", "3\n")
    with pytest.raises(InputError, match=r"evil-jit\.pt: not readable as a TorchScript CLIP file without running it "
                                         r"\(UnpicklingError: refused global io\.open\)") as err:
        load_clip(archive)
    assert "\n" not in str(err.value)
    assert not os.path.exists(marker) and not os.path.exists(os.path.join(ROOT, "ran"))


def test_openai_torchscript_files_are_read_as_data_exactly(tmp_path, monkeypatch):
    path = str(tmp_path / "clip.pt")
    expected = write_tiny_clip_file(path, torchscript=True, seed=5)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load must not be called"))
    model, record = load_clip(path)
    assert same_tensors(model, expected) and record["origin"]["file_sha256"] == hashlib.sha256(
        open(path, "rb").read()).hexdigest()


def test_prefetch_command_round_trip(transformers_folder, tmp_path, capsys):
    _, folder = transformers_folder
    hub_cache = str(tmp_path / "shared" / "hub-cache")
    put_in_hub_cache(hub_cache, "acme/tiny-clip-hf", folder, COMMIT)
    out = str(tmp_path / "clip.safetensors")
    # A fresh process, with the environment a cluster job would have (huggingface_hub reads it at start);
    # HF_HUB_CACHE wins over HF_HOME.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "elsewhere"), HF_HUB_CACHE=hub_cache, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "models.clip_backbone", "--model", "hf-hub:acme/tiny-clip-hf",
                           "--output", out], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["source"] == {"kind": "hf-hub", "repo": "acme/tiny-clip-hf", "revision": COMMIT,
                              "file": "model.safetensors"}
    assert line["sha256"] == hashlib.sha256(open(out, "rb").read()).hexdigest() and line["output"] == out
    expected, _ = load_clip(folder)
    back, record = load_clip(out)  # head counts travel in the file's metadata
    assert same_tensors(back, expected) and record["dims"] == clip_dims(expected)
    assert line["clip_sha256"] == clip_backbone.clip_sha256(back)
    # torch.save output, in-process; heads other than width // 64 only fit a .safetensors file.
    assert prefetch_main(["--model", "random:tiny", "--imsize", "64", "--output", str(tmp_path / "t.pt")]) == 0
    assert same_tensors(load_clip(str(tmp_path / "t.pt"))[0], tiny_clip())
    assert prefetch_main(["--model", folder, "--output", str(tmp_path / "h.pt")]) == 1
    assert "write a .safetensors file" in capsys.readouterr().err
    # Without --output it only resolves (and would fill the caches).
    assert prefetch_main(["--model", folder]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["kind"] == "local"
    with pytest.raises(SystemExit) as help_exit:
        prefetch_main(["--help"])
    assert help_exit.value.code == 0 and "--output" in capsys.readouterr().out


def test_compact_checkpoint_from_a_hub_source_evaluates_offline_at_the_recorded_commit(
        fp16_exact_transformers_folder, tmp_path):
    import eval as eval_script
    import train_clip_vg
    from helpers_world import make_world
    from utils.checkpoint import load_checkpoint

    _, folder = fp16_exact_transformers_folder
    world = make_world(str(tmp_path / "world"), n_train_pseudo=4, n_val=3, n_train_images=2)
    flags = ["--imsize", str(TINY_HF_IMSIZE), "--dataset", "synthetic", "--data_root", world["data"],
             "--split_root", world["splits"], "--device", "cpu", "--num_workers", "0", "--vl_dropout", "0"]
    with hub_environment(str(tmp_path / "hf-home")) as cache:
        put_in_hub_cache(cache, "acme/tiny-clip-hf", folder, COMMIT)
        train_clip_vg.main(["--model", "hf-hub:acme/tiny-clip-hf", "--output_dir", str(tmp_path / "run"),
                            "--epochs", "1", "--batch_size", "4", "--lr", "1e-3", *flags])
        best = str(tmp_path / "run" / "best_checkpoint.pth")
        ckpt = load_checkpoint(best)
        assert ckpt["format"]["kind"] == "compact" and not any(k.startswith("clip.transformer") for k in ckpt["model"])
        assert ckpt["clip_source"]["origin"] == {"kind": "hf-hub", "repo": "acme/tiny-clip-hf", "revision": COMMIT,
                                                 "file": "model.safetensors"}
        first = eval_script.main(["--eval_model", best, "--eval_set", "val", "--output_dir", str(tmp_path / "e1"),
                                  "--save_predictions", str(tmp_path / "p1.jsonl"), *flags])
        # The hub moves on (main now points at other weights): the checkpoint still rebuilds its own commit.
        other = str(tmp_path / "other")
        tiny_transformers_clip(seed=9).save_pretrained(other)
        put_in_hub_cache(cache, "acme/tiny-clip-hf", other, LATER)
        assert load_clip("hf-hub:acme/tiny-clip-hf")[1]["origin"]["revision"] == LATER
        again = eval_script.main(["--eval_model", best, "--eval_set", "val", "--output_dir", str(tmp_path / "e2"),
                                  "--save_predictions", str(tmp_path / "p2.jsonl"), *flags])
    scores = ("samples", "val_set_accuracy", "val_set_miou")
    assert first["samples"] == 3 and [first[k] for k in scores] == [again[k] for k in scores]
    assert open(tmp_path / "p1.jsonl").read() == open(tmp_path / "p2.jsonl").read()


def test_a_checkpoint_record_never_opens_a_path_it_names(tmp_path, monkeypatch):
    from helpers_clip import tiny_args
    from models import build_model, build_model_from_checkpoint
    from utils.checkpoint import load_checkpoint, save_checkpoint

    marker = str(tmp_path / "ran")
    crafted = str(tmp_path / "crafted.pt")
    torch.save({"visual.proj": WritesMarker(marker)}, crafted)
    clip_file = str(tmp_path / "clip.pt")
    write_tiny_clip_file(clip_file, torchscript=False)
    model = build_model(tiny_args("--model", clip_file))
    path = str(tmp_path / "ckpt.pth")
    save_checkpoint(path, model, None, None, 0, None, 0.0)
    opened = []
    real_read = clip_backbone.read_weights_file
    monkeypatch.setattr(clip_backbone, "read_weights_file", lambda p, *a: opened.append(p) or real_read(p, *a))
    no_model = tiny_args()
    no_model.given_flags.remove("model")
    # The recorded file, byte-identical to the one trained with (SHA-256 checked before parsing): used.
    build_model_from_checkpoint(load_checkpoint(path), no_model)
    assert opened == [clip_file]
    # Records naming other files (a legacy record without the file's hash, a checkpoint, a file whose bytes
    # changed): never opened, whatever the file holds.
    ckpt = load_checkpoint(path)
    for record in ({"spec": crafted, "seed": None, "sha256": ckpt["clip_source"]["sha256"]},
                   {"spec": "checkpoint:" + crafted, "sha256": ckpt["clip_source"]["sha256"]},
                   dict(ckpt["clip_source"], spec=crafted, origin=dict(ckpt["clip_source"]["origin"], file=crafted))):
        opened.clear()
        ckpt["clip_source"] = record
        with pytest.raises(ClipWeightsNotFound, match=r"compact checkpoint.*crafted\.pt.*Pass --model") as err:
            build_model_from_checkpoint(ckpt, no_model)
        assert opened == [] and "\n" not in str(err.value)
    assert not os.path.exists(marker)


def test_records_of_earlier_versions_still_rebuild(hub, tmp_path, monkeypatch):
    """Records without ``origin``: a ``random:`` configuration, or a CLIP name (now resolved through the cache)."""
    from helpers_clip import tiny_args
    from models import build_model, build_model_from_checkpoint
    from utils.checkpoint import load_checkpoint, save_checkpoint

    no_model = tiny_args()
    no_model.given_flags.remove("model")
    model = build_model(tiny_args())
    path = str(tmp_path / "random.pth")
    save_checkpoint(path, model, None, None, 0, None, 0.0)
    ckpt = load_checkpoint(path)
    ckpt["clip_source"] = {k: v for k, v in ckpt["clip_source"].items() if k != "origin"}
    ckpt["clip_source"]["dims"].pop("vision_heads")
    assert same_tensors(build_model_from_checkpoint(ckpt, no_model).clip, model.clip)

    tiny = tiny_clip(seed=3)
    folder = save_open_clip_folder(tiny.state_dict(), str(tmp_path / "oc"), open_clip_config(clip_dims(tiny)))
    put_in_hub_cache(hub, clip_backbone.NAMED_HUB_REPOS["ViT-B/32"], folder, COMMIT)
    monkeypatch.setitem(CLIP_ARCHS, "ViT-B/32", {k: v for k, v in clip_dims(tiny).items() if k != "vision_heads"})
    named, _ = load_clip("ViT-B/32", download_root=str(tmp_path / "none"))
    no_model.clip_download_root = str(tmp_path / "none")  # no OpenAI file: the hub cache serves the name
    ckpt["clip_source"] = {"spec": "ViT-B/32", "seed": None,
                           "sha256": clip_backbone.clip_sha256(named, exclude=["visual.positional_embedding"])}
    rebuilt = build_model_from_checkpoint(ckpt, no_model)
    assert same_tensors(rebuilt.clip, named) and rebuilt.clip_source["spec"] == "ViT-B/32"
