"""The benchmark scripts in tiny configurations: one well-formed JSON object each, with the documented keys and
positive figures (speed itself is never asserted), clear errors for bad flags, and synthetic batches shaped like
real ones."""
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import benchmark_data, benchmark_e2e, benchmark_matmul, benchmark_model, benchmark_scaling
from benchmarks._common import COCO_SIZES, batch_padding, model_spec, synthetic_batch
from datasets.transforms import EvalTransform
from helpers_clip import TINY_IMSIZE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MODEL = ["--model", "tiny", "--random_weights", "--device", "cpu", "--imsize", str(TINY_IMSIZE),
              "--threads", "1"]


def printed_json(capsys):
    """The single JSON object the script printed on stdout."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def assert_positive(result, keys):
    for key in keys:
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])


def test_model_benchmark_reports_train_and_eval_throughput(capsys):
    returned = benchmark_model.main(TINY_MODEL + ["--batch_size", "2", "--steps", "2", "--warmup", "1",
                                                  "--repeats", "2", "--max_query_len", "20"])
    result = printed_json(capsys)
    assert result == json.loads(json.dumps(returned))
    assert_positive(result, ["train_samples_per_s", "eval_samples_per_s", "peak_memory_mb",
                             "train_samples_per_s_best", "eval_samples_per_s_best"])
    assert len(result["train_runs"]) == len(result["eval_runs"]) == 2
    assert result["train_samples_per_s_best"] == max(result["train_runs"])
    config = result["config"]
    assert config["model"] == "random:tiny" and config["device"] == "cpu" and config["threads"] == 1
    assert (config["batch_size"], config["steps"], config["amp"], config["paths"]) == (2, 2, "off", "fast")
    assert 0 < config["trainable_params"] < config["total_params"]
    assert config["torch"] == torch.__version__
    # the timed computation gives the reference forward pass's boxes (up to float rounding)
    assert 0 <= result["max_abs_box_diff_vs_reference"] < 1e-4


@pytest.mark.parametrize("mode, present, absent", [("eval", "eval_samples_per_s", "train_samples_per_s"),
                                                   ("train", "train_samples_per_s", "eval_samples_per_s")])
def test_model_benchmark_single_mode_on_the_reference_path(capsys, mode, present, absent):
    benchmark_model.main(TINY_MODEL + ["--batch_size", "2", "--steps", "1", "--warmup", "0", "--mode", mode,
                                       "--paths", "reference", "--max_query_len", "20"])
    result = printed_json(capsys)
    assert_positive(result, [present, "peak_memory_mb"])
    assert absent not in result and result["config"]["paths"] == "reference"
    assert result["max_abs_box_diff_vs_reference"] == 0.0


def test_data_benchmark_reports_both_loaders_and_stages(capsys, tmp_path):
    benchmark_data.main(["--num_workers", "0", "--batch_size", "2", "--batches", "2", "--images", "3",
                         "--image_size", "96", "--imsize", str(TINY_IMSIZE), "--stage_samples", "2",
                         "--work_dir", str(tmp_path)])
    result = printed_json(capsys)
    assert_positive(result, ["train_samples_per_s", "eval_samples_per_s", "train_first_batch_s",
                             "eval_first_batch_s"])
    assert set(result["stages_ms_per_sample"]) == {"decode_ms", "decode_draft_ms", "train_transform_ms",
                                                   "eval_transform_ms"}
    assert_positive(result["stages_ms_per_sample"], result["stages_ms_per_sample"])
    assert result["config"]["dataset"] == "unc" and result["config"]["mean_jpeg_kib"] > 0
    images = tmp_path / "data" / "other" / "images" / "mscoco" / "images" / "train2014"
    assert len(list(images.glob("COCO_train2014_*.jpg"))) == 3
    assert (tmp_path / "splits" / "unc" / "unc_train_pseudo.pth").is_file()


def test_e2e_benchmark_trains_on_the_synthetic_world(capsys, tmp_path):
    benchmark_e2e.main(["--model", "tiny", "--device", "cpu", "--imsize", str(TINY_IMSIZE), "--image_size", "64",
                        "--batch_size", "2", "--steps", "2", "--epochs", "1", "--warmup_epochs", "0",
                        "--num_workers", "0", "--threads", "1", "--work_dir", str(tmp_path)])
    result = printed_json(capsys)
    assert_positive(result, ["train_samples_per_s", "peak_memory_mb"])
    config = result["config"]
    assert config["model"] == "random:tiny" and config["steps"] == 2 and config["train_samples"] == 4
    assert (tmp_path / "data" / "synthetic" / "world.json").is_file()


def test_script_runs_as_a_file_and_prints_only_json(tmp_path):
    """``python benchmarks/benchmark_model.py ...`` from another folder: stdout is exactly one JSON object."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "benchmark_model.py"), *TINY_MODEL,
                          "--batch_size", "1", "--steps", "1", "--warmup", "0", "--mode", "eval",
                          "--max_query_len", "8"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["eval_samples_per_s"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "--device tpu: expected cpu, cuda or cuda:N"),
    (["--model", "random:nonexistent"], "--model random:nonexistent: unknown random CLIP configuration"),
    (["--batch_size", "0"], None),
])
def test_bad_flags_are_named(argv, message, capsys):
    base = ["--model", "tiny", "--device", "cpu", "--imsize", str(TINY_IMSIZE), "--steps", "1", "--warmup", "0"]
    with pytest.raises(SystemExit) as exc:
        benchmark_model.main(base + argv)
    if message is None:  # argparse: exit status 2, the flag named on stderr
        assert exc.value.code == 2 and "--batch_size" in capsys.readouterr().err
    else:
        assert message in str(exc.value.code)


def test_model_specs():
    assert model_spec("ViT-B/16", random_weights=True) == "random:ViT-B/16"
    assert model_spec("ViT-B/16", random_weights=False) == "ViT-B/16"
    assert model_spec("tiny", random_weights=False) == "random:tiny"
    assert model_spec("random:ViT-L/14", random_weights=True) == "random:ViT-L/14"


@pytest.mark.parametrize("size", sorted(set(COCO_SIZES)))
def test_synthetic_batches_pad_like_the_eval_transform(size):
    """The padding a benchmark batch carries for an image of ``size`` is the eval transform's, so the model sees
    real padding masks (which decide how many tokens the fusion keeps)."""
    from PIL import Image

    imsize = 224
    real = EvalTransform(imsize)(Image.new("RGB", size), torch.tensor([0.0, 0.0, 10.0, 10.0]))
    top, left, h, w, scale = batch_padding(imsize, size)
    mask = torch.ones(imsize, imsize, dtype=torch.bool)
    mask[top:top + h, left:left + w] = False
    assert torch.equal(mask, real.mask)
    assert torch.allclose(torch.tensor([scale, left, top, 0.0]), real.transform)


def test_synthetic_batch_matches_the_dataset_item_contract():
    batch = synthetic_batch(3, 64, 20, torch.Generator().manual_seed(0), start_index=5)
    assert batch["img"].shape == (3, 3, 64, 64) and batch["img"].dtype == torch.float32
    assert batch["img_mask"].shape == (3, 64, 64) and batch["img_mask"].dtype == torch.bool
    assert batch["text"].shape == (3, 20) and batch["text"].dtype == torch.int64
    assert batch["index"].tolist() == [5, 6, 7]
    assert ((batch["box"] > 0) & (batch["box"] < 1)).all()
    assert (batch["img"][batch["img_mask"][:, None].expand_as(batch["img"])] == 0).all()


def test_scaling_benchmark_scores_every_sample_once_on_each_process_count(capsys):
    benchmark_scaling.main(["--model", "tiny", "--imsize", str(TINY_IMSIZE), "--image_size", str(TINY_IMSIZE),
                            "--samples", "7", "--batch_size", "2", "--nprocs", "1", "2",
                            "--scripts", "reliability"])
    result = printed_json(capsys)
    runs = result["reliability"]
    assert runs["agree"] is True  # 7 samples: the 2-process sampler pads one, which must not be counted
    for n in ("1", "2"):
        assert runs[n]["samples"] == 7 and runs[n]["eval_samples_per_s"] > 0 and runs[n]["wall_s"] > 0
    assert runs["1"]["speedup"] == 1.0 and runs["2"]["speedup"] > 0
    assert result["config"]["nprocs"] == [1, 2] and result["config"]["model"] == "random:tiny"


@pytest.mark.parametrize("compare, amp, largest_diff", [("reference", "off", 1e-4), ("bf16", "bf16", 0.05)])
def test_model_benchmark_compares_two_variants_interleaved(capsys, compare, amp, largest_diff):
    """--compare times a second variant in the same run: its rates, the ratios and how far its boxes are from
    the main variant's (the reference: float rounding; bf16: up to the bf16 tolerance of tests/test_amp_cpu.py)."""
    benchmark_model.main(TINY_MODEL + ["--batch_size", "2", "--steps", "1", "--warmup", "0", "--repeats", "2",
                                       "--max_query_len", "20", "--compare", compare])
    result = printed_json(capsys)
    other = result["compare"]
    assert other["amp"] == amp and other["variant"] == ("reference" if compare == "reference" else "fast+amp=bf16")
    assert_positive(other, ["train_samples_per_s", "eval_samples_per_s"])
    assert len(other["train_runs"]) == len(result["train_runs"]) == 2
    for mode in ("train", "eval"):
        ratio = other[f"{mode}_ratio"]
        assert ratio["ratio_of_medians"] == pytest.approx(result[f"{mode}_samples_per_s"]
                                                          / other[f"{mode}_samples_per_s"], rel=1e-3)
        assert ratio["median_ratio"] > 0
    assert 0 <= other["max_abs_box_diff_vs_main"] < largest_diff
    assert 0 <= result["max_abs_box_diff_vs_reference"] < 1e-4
    assert result["forward_gflops_per_sample"] > 0
    if compare == "reference":  # the straightforward pass does more work (the text tower on all 77 positions...)
        assert other["forward_flop_ratio"] == pytest.approx(other["forward_gflops_per_sample"]
                                                            / result["forward_gflops_per_sample"], rel=1e-3)
        assert other["forward_flop_ratio"] > 1.0
    else:  # the same computation in another dtype
        assert "forward_flop_ratio" not in other


class OneLinearOneAttention(torch.nn.Module):
    """x (B, 5, 6) -> a (6 -> 12) product through the model's ``linear`` (oneDNN on the CPU), then 2-head
    attention over the 5 positions: 2*5*6*12 + 4*2*5*5*3 FLOPs per sample."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(12, 6))

    def forward(self, img, img_mask, text):
        from models.onednn_linear import linear
        h = linear(img, self.weight).view(img.shape[0], 5, 2, 2, 3).permute(2, 0, 3, 1, 4)
        return torch.nn.functional.scaled_dot_product_attention(h[0], h[1], h[1])


def test_forward_flops_count_onednn_matmuls_and_cpu_attention():
    batch = {"img": torch.randn(3, 5, 6), "img_mask": None, "text": None}
    expected = (2 * 5 * 6 * 12 + 4 * 2 * 5 * 5 * 3) / 1e9
    assert benchmark_model.forward_gflops_per_sample(OneLinearOneAttention(), batch) == pytest.approx(expected)


def test_matmul_benchmark_times_both_backends_on_the_model_shapes(capsys):
    returned = benchmark_matmul.main(["--batch_size", "1", "--fusion_tokens", "20", "--text_tokens", "3",
                                      "--threads", "1", "--repeats", "1", "--iters", "1"])
    result = printed_json(capsys)
    assert result == json.loads(json.dumps(returned))
    shapes = [(r["m"], r["k"], r["n"]) for r in result["shapes"]]
    assert shapes[:4] == [(197, 768, 2304), (197, 768, 768), (197, 768, 3072), (197, 3072, 768)]
    assert shapes[-1] == (3, 512, 1536) and result["backends"] == ["onednn", "blas"]
    for row in result["shapes"]:
        assert row["onednn_gflops"] > 0 and row["blas_gflops"] > 0
        assert row["onednn_over_blas"] == pytest.approx(row["onednn_gflops"] / row["blas_gflops"], rel=0.01)
    assert result["cpu"]["capability"] and isinstance(result["cpu"]["amx_bf16"], bool)
