"""``--amp bf16`` on the CPU: training step, evaluation, reliability scoring and inference run in bf16 autocast and
stay close to fp32; ``--amp auto`` (the default) is fp32 on the CPU.

Tolerance: boxes are (cx, cy, w, h) in [0, 1]; bf16 keeps 8 bits of mantissa (relative rounding 2^-9 per
operation), and on these tiny random models its boxes differ from fp32 by about 1e-3 to 1e-2, so the tests accept
``BF16_BOX_ATOL = 0.05`` (5% of the image side; 3.2 px at 64 px) and fail if bf16 was silently not used (boxes
bitwise equal to fp32)."""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import engine
import eval as eval_script
import eval_for_reliability_distribution as reliability_script
import inference
import train_clip_vg
from benchmarks import amp_accuracy
from benchmarks._common import synthetic_batch
from helpers_clip import TINY_IMSIZE, tiny_args
from helpers_world import common_args, world_with_checkpoint
from models import build_model
from models.loss import grounding_loss
from utils.errors import InputError, UsageError

BF16_BOX_ATOL = 0.05
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_args("--vl_dim_feedforward", "128", "--max_query_len", "20", "--vl_dropout", "0"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_with_checkpoint(str(tmp_path_factory.mktemp("amp")), n_train_pseudo=8, n_val=6)


def batches(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [synthetic_batch(4, TINY_IMSIZE, 20, g, start_index=4 * i) for i in range(n)]


def test_auto_is_fp32_on_the_cpu_and_bf16_on_cuda():
    assert engine.resolve_amp(CPU, "auto") == engine.resolve_amp(CPU, None) == "off"
    assert engine.resolve_amp(torch.device("cuda"), "auto") == "bf16"
    assert engine.resolve_amp(CPU, "bf16") == "bf16"
    assert tiny_args().amp == "auto"
    with pytest.raises(UsageError, match="--amp fp16: needs a CUDA device"):
        engine.resolve_amp(CPU, "fp16")


def test_bf16_training_step_is_close_to_fp32_and_really_bf16(model):
    batch = batches(1)[0]
    results = {}
    for amp in ("off", "bf16"):
        model.train()
        model.zero_grad(set_to_none=True)
        with engine.autocast(CPU, amp):
            pred = model(batch["img"], batch["img_mask"], batch["text"])
        grounding_loss(pred.float(), batch["box"])["loss"].backward()
        results[amp] = (pred.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                if p.grad is not None})
    model.zero_grad(set_to_none=True)
    (fp32, grads32), (bf16, grads16) = results["off"], results["bf16"]
    assert not torch.equal(fp32, bf16)
    assert (fp32 - bf16).abs().max() < BF16_BOX_ATOL
    assert grads32.keys() == grads16.keys() and "clip.visual.positional_embedding" in grads16
    for name, grad in grads16.items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        # same direction of descent: bf16 changes the gradient's rounding, not its meaning
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), grads32[name].flatten(), dim=0)
        assert cosine > 0.95, (name, float(cosine))


def test_bf16_evaluation_is_close_to_fp32(model):
    data = batches(2)
    fp32 = engine.evaluate(model, data, CPU, "off")
    bf16 = engine.evaluate(model, data, CPU, "bf16")
    assert torch.equal(fp32.indices, bf16.indices)
    assert not torch.equal(fp32.pred_boxes, bf16.pred_boxes)
    assert (fp32.pred_boxes - bf16.pred_boxes).abs().max() < BF16_BOX_ATOL


def test_bf16_on_a_cpu_without_bf16_units_warns_once(model, monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            with engine.autocast(CPU, "bf16"):
                pass
    slow = [w for w in caught if issubclass(w.category, engine.SlowBF16Warning)]
    assert len(slow) == 1 and "neither AMX nor AVX512-BF16" in str(slow[0].message)


def test_bf16_cli_training_evaluation_reliability_and_inference(world, tmp_path, capsys):
    summary = train_clip_vg.main(common_args(world, tmp_path / "train", "--epochs", "1", "--batch_size", "4",
                                             "--amp", "bf16"))
    assert summary is not None and os.path.exists(tmp_path / "train" / "best_checkpoint.pth")
    ckpt = world["ckpt"]
    rows = {}
    for amp in ("off", "bf16"):
        path = tmp_path / f"pred_{amp}.jsonl"
        eval_script.main(common_args(world, tmp_path / f"eval_{amp}", "--eval_model", ckpt, "--eval_set", "val",
                                     "--batch_size", "3", "--amp", amp, "--save_predictions", str(path)))
        rows[amp] = [json.loads(line) for line in open(path)]
    assert [r["index"] for r in rows["off"]] == [r["index"] for r in rows["bf16"]]
    for r32, r16 in zip(rows["off"], rows["bf16"]):  # original pixels (the world's images are TINY_IMSIZE px)
        assert r16["pred_xyxy"] == pytest.approx(r32["pred_xyxy"], abs=BF16_BOX_ATOL * TINY_IMSIZE)
    scored = reliability_script.main(common_args(world, tmp_path / "rel", "--eval_model", ckpt, "--eval_set",
                                                 "train_pseudo", "--amp", "bf16"))
    assert scored and os.path.exists(tmp_path / "rel" / "synthetic_train_pseudo_reliability.jsonl")
    images = os.path.join(world["data"], "synthetic", "images")
    image = os.path.join(images, sorted(os.listdir(images))[0])
    boxes = {amp: inference.main(["--eval_model", ckpt, "--device", "cpu", "--image", image, "--query",
                                  "the red circle", "--amp", amp])[0]["box_xyxy"] for amp in ("off", "bf16")}
    assert boxes["bf16"] == pytest.approx(boxes["off"], abs=BF16_BOX_ATOL * TINY_IMSIZE)
    capsys.readouterr()


def test_amp_accuracy_benchmark_compares_a_checkpoints_predictions_under_fp32_and_bf16(world, tmp_path, capsys):
    argv = ["--eval_model", world["ckpt"], "--dataset", "synthetic", "--eval_set", "val", "--data_root",
            world["data"], "--split_root", world["splits"], "--threads", "1", "--work_dir", str(tmp_path)]
    result = amp_accuracy.main(argv)
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))  # one JSON object on stdout
    cell = result["results"][world["ckpt"]]["val"]
    assert cell["samples"] == 6 and result["summary"]["samples"] == 6
    # bf16 really ran, its boxes stay within the stated tolerance, and the counts agree with the two files
    assert 0.0 < cell["max_abs_box_diff_px"] < BF16_BOX_ATOL * TINY_IMSIZE
    assert 0.0 < cell["min_iou_with_reference_box"] <= cell["mean_iou_with_reference_box"] < 1.0
    fp32, bf16 = (tmp_path / "model0" / "off" / "val.jsonl", tmp_path / "model0" / "bf16" / "val.jsonl")
    rows32, rows16 = ([json.loads(line) for line in path.read_text().splitlines()] for path in (fp32, bf16))
    hits32, hits16 = (sum(r["iou"] >= 0.5 for r in rows) for rows in (rows32, rows16))
    assert cell["accuracy_change_points"] == pytest.approx(100 * (hits16 - hits32) / 6)
    largest = max(abs(a - b) for r32, r16 in zip(rows32, rows16) for a, b in zip(r32["pred_xyxy"], r16["pred_xyxy"]))
    assert cell["max_abs_box_diff_px"] == pytest.approx(largest)


def test_amp_accuracy_benchmark_needs_one_source_of_models(world):
    with pytest.raises(UsageError, match="either --demo DIR or --eval_model"):
        amp_accuracy.main(["--threads", "1"])
    with pytest.raises(UsageError, match="--eval_model needs --dataset"):
        amp_accuracy.main(["--eval_model", world["ckpt"], "--eval_set", "val"])
    with pytest.raises(UsageError, match="--demo takes the demo's own data: drop --data_root"):
        amp_accuracy.main(["--demo", world["root"], "--data_root", world["data"]])


def test_amp_accuracy_benchmark_command_line_bad_input_is_one_error_line(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                          "amp_accuracy.py")
    proc = subprocess.run([sys.executable, script, "--demo", str(tmp_path / "nowhere")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == f"error: --demo {tmp_path / 'nowhere'}: no such folder (a " \
                                                   "finished demo's --output_dir)"


def test_amp_accuracy_benchmark_names_what_is_missing_in_a_demo_folder(world, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        amp_accuracy.main(["--demo", str(tmp_path / "nowhere")])
    with pytest.raises(InputError, match="the demo's model 'all template labels \\(no selection\\)' is not finished"):
        amp_accuracy.main(["--demo", world["root"]])
