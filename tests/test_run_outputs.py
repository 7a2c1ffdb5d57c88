"""Outputs are never lost and are checked before any work: a rerun into a folder that holds a run is refused (files
byte-identical afterwards) unless it continues it (--resume auto) or starts over on purpose (--overwrite); a no-op
resume keeps result.json; unwritable outputs of eval, inference and the pseudo-label CLIs fail before any
computation naming the real path; a full disk or Ctrl-C during a checkpoint write is one line and leaves no
temporary file; stale temporaries are removed by a later run."""
import errno
import hashlib
import json
import os
import shutil

import pytest
import torch

import eval as eval_script
import inference
import train_clip_vg
import utils.io
from helpers_world import common_args, make_world, random_checkpoint
from pseudo_label_generation_module import caption, relation, template
from utils.errors import InputError, RunFailed, UsageError
from utils.io import atomic_torch_save, write_json

RUN = ("--epochs", "1", "--batch_size", "4")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The world and a finished 1-epoch run in it."""
    world = make_world(str(tmp_path_factory.mktemp("world")), n_train_pseudo=8, n_val=7)
    finished = tmp_path_factory.mktemp("finished")
    summary = train_clip_vg.main(common_args(world, finished, *RUN))
    return {**world, "finished": str(finished), "summary": summary}


def digests(folder):
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, name))}


def copy_run(world, dest):
    os.makedirs(dest)
    for name in ("checkpoint.pth", "best_checkpoint.pth", "log.txt", "result.json"):
        with open(os.path.join(world["finished"], name), "rb") as src, open(os.path.join(dest, name), "wb") as dst:
            dst.write(src.read())
    return dest


def fail_if_called(*_args, **_kwargs):
    raise AssertionError("work started before the outputs were checked")


# ---------------------------------------------------------------- never lose a run

@pytest.mark.parametrize("extra", [(), ("--retrain", "BEST"), ("--resume", "auto", "--overwrite")])
def test_rerun_into_a_finished_folder_is_refused_and_keeps_every_file(world, tmp_path, extra, monkeypatch):
    out = copy_run(world, str(tmp_path / "run"))
    before = digests(out)
    monkeypatch.setattr(train_clip_vg, "build_dataset", fail_if_called)
    extra = [str(tmp_path / "run" / "best_checkpoint.pth") if e == "BEST" else e for e in extra]
    with pytest.raises(InputError) as info:
        train_clip_vg.main(common_args(world, out, *RUN, *extra))
    if "--overwrite" in extra:
        assert isinstance(info.value, UsageError) and "give only one of them" in str(info.value)
    else:
        message = str(info.value)
        assert "\n" not in message and f"--output_dir {out} already holds a run" in message
        assert "checkpoint.pth, best_checkpoint.pth, result.json, log.txt" in message
        assert "--resume auto" in message and "--overwrite" in message
    assert digests(out) == before


def test_resume_auto_without_a_checkpoint_does_not_restart_over_a_run(world, tmp_path):
    out = copy_run(world, str(tmp_path / "run"))
    os.remove(os.path.join(out, "checkpoint.pth"))
    before = digests(out)
    with pytest.raises(InputError, match="no checkpoint.pth to continue from: start over with --overwrite"):
        train_clip_vg.main(common_args(world, out, *RUN, "--resume", "auto"))
    assert digests(out) == before


def test_overwrite_starts_over_on_purpose(world, tmp_path, capsys):
    out = copy_run(world, str(tmp_path / "run"))
    os.makedirs(os.path.join(out, "tensorboard"))
    (tmp_path / "run" / "tensorboard" / "old_events").write_text("old")
    summary = train_clip_vg.main(common_args(world, out, "--epochs", "2", "--batch_size", "4", "--overwrite"))
    assert "--overwrite: deleted the earlier run" in capsys.readouterr().out
    assert summary["last_epoch_stats"]["epoch"] == 1
    lines = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines[1:]] == [0, 1]
    assert not (tmp_path / "run" / "tensorboard" / "old_events").exists()


def test_noop_resume_keeps_the_result_and_says_so(world, tmp_path, capsys):
    out = copy_run(world, str(tmp_path / "run"))
    (tmp_path / "run" / ".checkpoint.pth.k2j4x.tmp").write_bytes(b"partial")
    (tmp_path / "run" / ".write-test-abc").write_text("ok")
    before = digests(out)
    summary = train_clip_vg.main(common_args(world, out, *RUN, "--resume", "auto"))
    printed = capsys.readouterr().out
    assert "the run has already trained 1 epochs, --epochs is 1: nothing to train" in printed
    assert summary == world["summary"] and summary["last_epoch_stats"]["epoch"] == 0
    after = digests(out)
    assert ".checkpoint.pth.k2j4x.tmp" not in after and ".write-test-abc" not in after  # stale temporaries removed
    assert after == {k: v for k, v in before.items() if not k.startswith(".")}
    assert not os.path.exists(os.path.join(out, "tensorboard"))

    os.remove(os.path.join(out, "result.json"))  # interrupted after the last checkpoint: rebuilt from log.txt
    summary = train_clip_vg.main(common_args(world, out, *RUN, "--resume", "auto"))
    assert summary["last_epoch_stats"] == world["summary"]["last_epoch_stats"]
    with open(os.path.join(out, "result.json")) as fh:
        assert json.load(fh)["last_epoch_stats"] == world["summary"]["last_epoch_stats"]


# ---------------------------------------------------------------- checkpoint writes

@pytest.mark.parametrize("fault", ["disk full", "ctrl-c"])
def test_fault_during_a_checkpoint_write_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch, fault):
    path = str(tmp_path / "checkpoint.pth")
    atomic_torch_save({"epoch": 0}, path)
    before = digests(str(tmp_path))

    def failing_save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 partial")
        if fault == "disk full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise KeyboardInterrupt

    monkeypatch.setattr(utils.io.torch, "save", failing_save)
    expected = RunFailed if fault == "disk full" else KeyboardInterrupt
    with pytest.raises(expected) as info:
        atomic_torch_save({"epoch": 1}, path)
    message = str(info.value)
    assert "\n" not in message and "inline_container" not in message and path in message
    assert ("No space left on device" if fault == "disk full" else "interrupted while writing") in message
    assert "the previous file is unchanged" in message
    assert digests(str(tmp_path)) == before  # old checkpoint intact, no .checkpoint.pth.*.tmp left


def test_disk_full_while_training_stops_the_run_with_one_line(world, tmp_path, monkeypatch):
    def full(obj, fh, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(utils.io.torch, "save", full)
    with pytest.raises(RunFailed, match=r"checkpoint\.pth: not written: No space left on device"):
        train_clip_vg.main(common_args(world, tmp_path / "run", *RUN))
    assert not [n for n in os.listdir(tmp_path / "run") if n.endswith(".tmp") or n.startswith(".write-test-")]


def test_output_dir_probe_leaves_nothing_when_the_disk_is_full(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(utils.io.os, "write", full)
    with pytest.raises(InputError, match="--output_dir .*: cannot write there"):
        utils.io.check_writable_dir(str(tmp_path), "--output_dir")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- outputs checked before any work

def blocked(tmp_path, name):
    """A path that cannot be written: its folder would have to be inside a regular file."""
    (tmp_path / "afile").write_text("x")
    return str(tmp_path / "afile" / "sub" / name)


def test_eval_save_predictions_folder_or_unwritable_fails_before_work(world, tmp_path, monkeypatch):
    monkeypatch.setattr(eval_script, "load_checkpoint", fail_if_called)
    checkpoint = os.path.join(world["finished"], "best_checkpoint.pth")
    for target, message in ((str(tmp_path), "is a folder"), (blocked(tmp_path, "p.jsonl"), "cannot write it")):
        with pytest.raises(InputError) as info:
            eval_script.main(common_args(world, tmp_path / "eval", "--eval_model", checkpoint, "--eval_set", "val",
                                         "--save_predictions", target))
        assert str(info.value).startswith(f"--save_predictions {target}: {message}")


@pytest.mark.parametrize("flag, name", [("--out", "vis.png"), ("--attention", "att.png")])
def test_inference_picture_unwritable_fails_before_work(world, tmp_path, monkeypatch, flag, name):
    image = os.path.join(world["data"], "synthetic", "images", sorted(os.listdir(
        os.path.join(world["data"], "synthetic", "images")))[0])
    checkpoint = random_checkpoint(world, str(tmp_path / "m.pth"))
    monkeypatch.setattr(inference, "load_checkpoint", fail_if_called)
    target = blocked(tmp_path, name)
    with pytest.raises(InputError, match=f"{flag} {target}: cannot write it"):
        inference.main(["--eval_model", checkpoint, "--image", image, "--query", "a red circle", flag, target,
                        "--device", "cpu"])


def test_eval_report_folder_unwritable_fails_before_work(world, tmp_path, monkeypatch):
    monkeypatch.setattr(eval_script, "load_checkpoint", fail_if_called)
    checkpoint = os.path.join(world["finished"], "best_checkpoint.pth")
    target = blocked(tmp_path, "report")
    with pytest.raises(InputError, match=f"^--report {target}: "):
        eval_script.main(common_args(world, tmp_path / "eval", "--eval_model", checkpoint, "--eval_set", "val",
                                     "--report", target))


def test_overwrite_never_deletes_the_checkpoint_retrain_starts_from(world, tmp_path, monkeypatch):
    out = copy_run(world, str(tmp_path / "run"))
    before = digests(out)
    monkeypatch.setattr(train_clip_vg, "build_dataset", fail_if_called)
    best = os.path.join(out, "best_checkpoint.pth")
    with pytest.raises(UsageError, match="--overwrite would delete --retrain"):
        train_clip_vg.main(common_args(world, out, *RUN, "--retrain", best, "--overwrite"))
    assert digests(out) == before


@pytest.mark.parametrize("module, reader", [(template, "load_detections"), (relation, "load_scene_graphs"),
                                            (caption, "load_detections")])
def test_pseudo_label_output_unwritable_fails_before_work(tmp_path, monkeypatch, module, reader):
    monkeypatch.setattr(module, reader, fail_if_called)
    write_json(str(tmp_path / "in.json"), {"images": []})
    inputs = {template: ["--detections"], relation: ["--scene_graphs"],
              caption: ["--captions", str(tmp_path / "in.json"), "--detections"]}[module]
    target = blocked(tmp_path, "out.pth")
    with pytest.raises(InputError, match=f"--output {target}: cannot write it"):
        module.main([*inputs, str(tmp_path / "in.json"), "--dataset", "unc", "--output", target])
    with pytest.raises(InputError, match="--stats .*: is a folder"):
        module.main([*inputs, str(tmp_path / "in.json"), "--dataset", "unc", "--output", str(tmp_path / "o.pth"),
                     "--stats", str(tmp_path)])


# ---------------------------------------------------------------- boxes outside the image, in a training run

def test_training_run_skips_a_box_outside_its_image_and_prints_the_count(world, tmp_path, capsys):
    splits = tmp_path / "splits"
    shutil.copytree(world["splits"], splits)
    path = splits / "synthetic" / "synthetic_train_pseudo.pth"
    samples = torch.load(path, weights_only=True)
    image, extra, _, query, extra2 = samples[3]
    samples[3] = (image, extra, [500.0, 500.0, 50.0, 50.0], query, extra2)  # a box far outside a 64 px image
    torch.save(samples, path)
    argv = common_args(world, tmp_path / "run", *RUN)
    argv[argv.index("--split_root") + 1] = str(splits)
    summary = train_clip_vg.main(argv)
    assert summary["last_epoch_stats"]["epoch"] == 0
    assert "train_pseudo: skipped 1 sample(s) whose box lies outside its image (first: sample 3" in \
        capsys.readouterr().out
