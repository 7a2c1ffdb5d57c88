"""Training and evaluation end to end on a tiny synthetic world with a tiny CLIP file (CPU, gloo for 2 processes)."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import eval as eval_script
import train_clip_vg
from demo.synthetic import SyntheticConfig, generate
from helpers_clip import write_tiny_clip_file
from utils.checkpoint import load_checkpoint
from utils.errors import InputError, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny synthetic world (64 px) with train_pseudo = 8 train samples, a val split of 7 samples (odd, so
    2 processes split it unevenly) and a tiny OpenAI-format CLIP file."""
    root = tmp_path_factory.mktemp("world")
    data, splits = str(root / "data"), str(root / "splits")
    generate(data, splits, SyntheticConfig(n_train_images=6, n_val_images=4, n_testA_images=2, n_testB_images=2,
                                           n_pretrain=4, image_size=64))
    folder = os.path.join(splits, "synthetic")
    train = torch.load(os.path.join(folder, "synthetic_train.pth"), weights_only=True)
    val = torch.load(os.path.join(folder, "synthetic_val.pth"), weights_only=True)
    assert len(train) >= 8 and len(val) >= 7
    torch.save(train[:8], os.path.join(folder, "synthetic_train_pseudo.pth"))
    torch.save(val[:7], os.path.join(folder, "synthetic_val.pth"))
    clip_file = str(root / "tiny_clip.pt")
    write_tiny_clip_file(clip_file, torchscript=False)
    return {"data": data, "splits": splits, "clip": clip_file, "root": root}


def common(world, out, *extra):
    return ["--model", world["clip"], "--imsize", "64", "--dataset", "synthetic", "--data_root", world["data"],
            "--split_root", world["splits"], "--output_dir", str(out), "--device", "cpu", "--num_workers", "0",
            "--vl_dropout", "0", "--lr", "1e-3", *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launcher, script, argv, nproc=2):
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", *launcher, f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           os.path.join(ROOT, script), *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def trainable_state(path):
    ckpt = load_checkpoint(path)
    return {k: v for k, v in ckpt["model"].items() if not k.startswith("clip.")} | {
        "pos": ckpt["model"]["clip.visual.positional_embedding"]}


def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(world, tmp_path):
    """One optimisation step (8 samples): 2 gloo processes x batch 4 give the weights of 1 process x batch 8.
    (SGD: Adam's first step divides by |gradient| and so amplifies float noise on near-zero gradients.)"""
    single = tmp_path / "single"
    train_clip_vg.main(common(world, single, "--epochs", "1", "--batch_size", "8", "--optimizer", "sgd"))
    launch(["torch.distributed.run"], "train_clip_vg.py", common(world, tmp_path / "dual", "--epochs", "1",
                                                                    "--batch_size", "4", "--optimizer", "sgd"))
    a, b = trainable_state(single / "checkpoint.pth"), trainable_state(tmp_path / "dual" / "checkpoint.pth")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    log = (tmp_path / "dual" / "log.txt").read_text().splitlines()
    assert log[0].startswith("Namespace(") and json.loads(log[1])["epoch"] == 0


def test_legacy_launcher_with_local_rank_trains(world, tmp_path):
    out = launch(["torch.distributed.launch"], "train_clip_vg.py",
                 common(world, tmp_path, "--epochs", "1", "--batch_size", "2"))
    assert (tmp_path / "best_checkpoint.pth").is_file()
    assert "rank 0/2" in out.stdout


def test_distributed_eval_counts_every_sample_once(world, tmp_path):
    """7 val samples on 2 processes (the sampler pads one): same predictions and accuracy as 1 process."""
    train_clip_vg.main(common(world, tmp_path / "m", "--epochs", "1", "--batch_size", "4"))
    ckpt = str(tmp_path / "m" / "best_checkpoint.pth")
    one = eval_script.main(common(world, tmp_path / "e1", "--eval_model", ckpt, "--eval_set", "val",
                                  "--batch_size", "2", "--save_predictions", str(tmp_path / "p1.jsonl")))
    launch(["torch.distributed.run"], "eval.py",
           common(world, tmp_path / "e2", "--eval_model", ckpt, "--eval_set", "val", "--batch_size", "2",
                  "--save_predictions", str(tmp_path / "p2.jsonl")))
    rows1 = [json.loads(l) for l in open(tmp_path / "p1.jsonl")]
    rows2 = [json.loads(l) for l in open(tmp_path / "p2.jsonl")]
    assert [r["index"] for r in rows1] == list(range(7)) == [r["index"] for r in rows2]
    for r1, r2 in zip(rows1, rows2):
        assert r1["image"] == r2["image"] and r1["query"] == r2["query"]
        assert r1["pred_xyxy"] == pytest.approx(r2["pred_xyxy"], abs=1e-2)
    assert one["samples"] == 7
    assert one["val_set_accuracy"] == pytest.approx(sum(r["iou"] >= 0.5 for r in rows1) / 7)


def test_resume_continues_exactly(world, tmp_path):
    """Killed after epoch 1 and resumed (--resume auto) = the uninterrupted 3-epoch run."""
    flags = ("--batch_size", "4", "--lr_scheduler", "step", "--lr_drop", "1", "--aug_crop", "--aug_scale",
             "--aug_translate")
    train_clip_vg.main(common(world, tmp_path / "full", "--epochs", "3", *flags))
    train_clip_vg.main(common(world, tmp_path / "cut", "--epochs", "2", *flags))
    summary = train_clip_vg.main(common(world, tmp_path / "cut", "--epochs", "3", "--resume", "auto", *flags))
    assert summary["last_epoch_stats"]["epoch"] == 2
    a, b = trainable_state(tmp_path / "full" / "checkpoint.pth"), trainable_state(tmp_path / "cut" / "checkpoint.pth")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "cut" / "log.txt").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2]


def test_max_steps_trains_exactly_that_many_steps(world, tmp_path):
    """8 samples in batches of 2: 4 steps per epoch; --max_steps 6 makes 2 epochs (the schedule's length), the second
    cut after 2 steps, whatever --epochs says."""
    summary = train_clip_vg.main(common(world, tmp_path, "--batch_size", "2", "--epochs", "5", "--max_steps", "6",
                                        "--lr_scheduler", "cosine"))
    rows = [json.loads(l) for l in (tmp_path / "log.txt").read_text().splitlines()[1:]]
    assert [r["train_steps"] for r in rows] == [4, 2] and summary["epochs"] == 2
    with pytest.raises(UsageError, match="--max_steps 0: must be at least 1"):
        train_clip_vg.main(common(world, tmp_path / "zero", "--max_steps", "0"))


def test_val_interval_steps_validates_less_often_and_trains_the_same(world, tmp_path):
    """4 steps per epoch, 22 steps (6 epochs): with --val_interval_steps 10 validation (and the checkpoints) come
    after epoch 2 (12 steps) and after the last one; the trained weights are those of a run validated every epoch."""
    base = ["--batch_size", "2", "--max_steps", "22", "--lr_scheduler", "cosine", "--lr_per_step"]
    train_clip_vg.main(common(world, tmp_path / "every", *base))
    summary = train_clip_vg.main(common(world, tmp_path / "sparse", *base, "--val_interval_steps", "10"))
    every = [json.loads(l) for l in (tmp_path / "every" / "log.txt").read_text().splitlines()[1:]]
    sparse = [json.loads(l) for l in (tmp_path / "sparse" / "log.txt").read_text().splitlines()[1:]]
    assert [r["epoch"] for r in every] == [0, 1, 2, 3, 4, 5] and [r["epoch"] for r in sparse] == [2, 5]
    assert summary["best_epoch"] in (2, 5) and summary["epochs"] == 6
    last = {n: load_checkpoint(str(tmp_path / n / "checkpoint.pth"))["model"] for n in ("every", "sparse")}
    assert last["every"].keys() == last["sparse"].keys()
    assert all(torch.equal(last["every"][k], last["sparse"][k]) for k in last["every"])
    assert [r["val_accu"] for r in sparse] == [every[2]["val_accu"], every[5]["val_accu"]]
    with pytest.raises(UsageError, match="--val_interval_steps -1"):
        train_clip_vg.main(common(world, tmp_path / "bad", "--val_interval_steps", "-1"))


def test_lr_per_step_anneals_over_the_run_steps(world, tmp_path):
    """Cosine per step over 6 steps (lr 1e-3): x0.25 after the first epoch's 4 steps, 0 at the end; per epoch
    (the official way) the 2-epoch schedule is still at x1 after epoch 0 and x0.5 after epoch 1."""
    argv = common(world, tmp_path / "step", "--batch_size", "2", "--max_steps", "6", "--lr_scheduler", "cosine",
                  "--lr_per_step")
    train_clip_vg.main(argv)
    rows = [json.loads(l) for l in (tmp_path / "step" / "log.txt").read_text().splitlines()[1:]]
    assert [r["lr"] for r in rows] == pytest.approx([2.5e-4, 0.0], abs=1e-12)
    train_clip_vg.main(common(world, tmp_path / "epoch", "--batch_size", "2", "--max_steps", "6",
                              "--lr_scheduler", "cosine"))
    rows = [json.loads(l) for l in (tmp_path / "epoch" / "log.txt").read_text().splitlines()[1:]]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 5e-4])
    with pytest.raises(UsageError, match="trained without --lr_per_step"):
        train_clip_vg.main(common(world, tmp_path / "epoch", "--batch_size", "2", "--max_steps", "8",
                                  "--lr_scheduler", "cosine", "--lr_per_step", "--resume", "auto"))
    with pytest.raises(UsageError, match="--lr_per_step: the step schedule"):
        train_clip_vg.main(common(world, tmp_path / "x", "--lr_per_step", "--lr_scheduler", "step"))


def test_predictions_map_back_to_original_pixels(world, tmp_path):
    """A prediction equal to the target, mapped through the inverse of resize and padding, gives the file's box."""
    import engine
    from datasets import build_dataset
    from helpers_clip import tiny_args

    args = tiny_args("--dataset", "synthetic", "--data_root", world["data"], "--split_root", world["splits"])
    dataset = build_dataset("val", args, train=False)
    items = [dataset[i] for i in range(len(dataset))]
    result = engine.EvalResult(indices=torch.tensor([it["index"] for it in items]),
                               pred_boxes=torch.stack([it["box"] for it in items]),
                               target_boxes=torch.stack([it["box"] for it in items]),
                               transforms=torch.stack([it["transform"] for it in items]),
                               iou=torch.ones(len(items)))
    rows = engine.prediction_rows(result, dataset, 64)
    for row in rows:
        assert row["pred_xyxy"] == pytest.approx(row["target_xyxy"], abs=0.05)
    # Hand-checked: a 64x64 synthetic image is not resized (scale 1) nor padded.
    assert items[0]["transform"].tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("flags, message", [
    (("--dataset", "nope"), "valid datasets"),
    (("--eval_set", "testC"), "valid splits"),
    (("--eval_model", "/nonexistent/ckpt.pth"), "no such checkpoint file"),
])
def test_eval_bad_input_fails_with_one_clear_line(world, tmp_path, flags, message):
    argv = common(world, tmp_path, "--eval_model", str(tmp_path / "missing.pth"))
    argv += list(flags)
    if "--eval_model" not in flags:
        ckpt_dir = tmp_path / "m"
        train_clip_vg.main(common(world, ckpt_dir, "--epochs", "1", "--batch_size", "8"))
        argv += ["--eval_model", str(ckpt_dir / "best_checkpoint.pth")]
    with pytest.raises(InputError) as info:
        eval_script.main(argv)
    assert message in str(info.value)


def test_checkpoint_for_another_image_size_is_refused(world, tmp_path):
    train_clip_vg.main(common(world, tmp_path / "m", "--epochs", "1", "--batch_size", "8"))
    with pytest.warns(UserWarning, match="--imsize 96 differs from the 64"), pytest.raises(Exception) as info:
        eval_script.main(common(world, tmp_path / "e", "--eval_model", str(tmp_path / "m" / "best_checkpoint.pth"),
                                "--eval_set", "val", "--imsize", "96"))
    assert "imsize" in str(info.value)


def test_unwritable_output_dir_is_refused_before_work(world, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="--output_dir"):
        train_clip_vg.main(common(world, blocker / "sub", "--epochs", "1"))


def test_missing_resume_checkpoint_is_refused(world, tmp_path):
    with pytest.raises(InputError, match="--resume .*no such checkpoint"):
        train_clip_vg.main(common(world, tmp_path, "--epochs", "1", "--resume", str(tmp_path / "none.pth")))


@pytest.mark.parametrize("script, flags, message", [
    ("train_clip_vg.py", ["--model", "no_such_clip"], "--model no_such_clip: not a CLIP name"),
    ("eval.py", ["--eval_model", "/no/such.pth"], "--eval_model /no/such.pth: no such checkpoint file"),
])
def test_command_line_errors_are_one_line(world, tmp_path, script, flags, message):
    argv = ["--dataset", "synthetic", "--data_root", world["data"], "--split_root", world["splits"],
            "--output_dir", str(tmp_path / "out"), "--device", "cpu", *flags]
    out = subprocess.run([sys.executable, "-W", "ignore", os.path.join(ROOT, script), *argv], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in out.stderr


def test_deterministic_flag_switches_torch_to_deterministic_algorithms(world, tmp_path):
    try:
        train_clip_vg.main(common(world, tmp_path / "det", "--epochs", "1", "--batch_size", "4", "--deterministic"))
        assert torch.are_deterministic_algorithms_enabled()
        train_clip_vg.main(common(world, tmp_path / "fast", "--epochs", "1", "--batch_size", "4"))
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
