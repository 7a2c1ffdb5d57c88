"""train_clip_vg.py from a checkpoint: official-format optimizer / LR-scheduler states resume exactly, model settings
are adopted from the checkpoint (--resume and --retrain) and a given flag that disagrees is kept with a warning."""
import argparse
import copy
import json

import pytest
import torch

import train_clip_vg
from helpers_world import common_args, make_world
from utils.checkpoint import canonical_state_dict, load_checkpoint

OFFICIAL_EXTRA_LR = 1e-5  # the official optimizer's 3 empty groups (lr_bert, lr_visu_cnn, lr_visu_tra)


FLAGS = ("--batch_size", "4", "--lr_scheduler", "cosine")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The world and a 1-epoch full checkpoint (optimizer and cosine schedule state included) trained on it."""
    world = make_world(str(tmp_path_factory.mktemp("world")), n_train_pseudo=8, n_val=7)
    run = tmp_path_factory.mktemp("first")
    train_clip_vg.main(common_args(world, run, "--epochs", "1", "--full_checkpoint", *FLAGS))
    return {**world, "checkpoint": str(run / "checkpoint.pth"), "best": str(run / "best_checkpoint.pth")}


def without(argv, *flags):
    """``argv`` without the given ``--flag value`` pairs."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok in flags:
            skip = True
        else:
            out.append(tok)
    return out


def official_optimizer_state(ours):
    """Our single-group optimizer state in the official layout: 4 groups, visu_proj's (never stepped) weight and
    bias at entries 1 and 2 of the first."""
    group = ours["param_groups"][0]
    n = len(group["params"])
    state = {(0 if i == 0 else i + 2): copy.deepcopy(s) for i, s in ours["state"].items()}
    first = {**copy.deepcopy(group), "params": list(range(n + 2))}
    empty = [{**copy.deepcopy(group), "params": [], "lr": OFFICIAL_EXTRA_LR} for _ in range(3)]
    return {"state": state, "param_groups": [first, *empty]}


def official_scheduler_state(ours):
    """Our single-group LambdaLR state with the official per-group lists of 4."""
    out = copy.deepcopy(ours)
    out["base_lrs"] = ours["base_lrs"] + [OFFICIAL_EXTRA_LR] * 3
    out["_last_lr"] = ours["_last_lr"] + [OFFICIAL_EXTRA_LR] * 3
    out["lr_lambdas"] = [None] * 4
    return out


def write_official_checkpoint(ours_path, path):
    """An official-format checkpoint from one of ours (full): official keys, 4-group optimizer and scheduler
    states, an official-style args Namespace (no tapped_layers), no clip_source / format / best_* entries."""
    ckpt = load_checkpoint(ours_path)
    stored = vars(ckpt["args"])
    args = argparse.Namespace(**{k: stored[k] for k in ("lr", "batch_size", "epochs", "lr_scheduler", "imsize",
                                                        "max_query_len", "prompt", "vl_dropout", "vl_nheads",
                                                        "vl_hidden_dim", "vl_dim_feedforward", "vl_enc_layers",
                                                        "dataset", "seed")})
    official = {"model": ckpt["model"], "optimizer": official_optimizer_state(ckpt["optimizer"]),
                "lr_scheduler": official_scheduler_state(ckpt["lr_scheduler"]), "epoch": ckpt["epoch"],
                "args": args, "val_accu": ckpt["val_accu"]}
    assert "visu_proj.weight" in official["model"] and "image_encoder_clip_vg.conv1.weight" in official["model"]
    torch.save(official, path)
    return path


def trainable(path):
    """What training changes, by this model's keys (a run resumed from an official checkpoint takes its CLIP from it
    and so writes full checkpoints, official aliases and visu_proj included: ``canonical_state_dict`` maps them)."""
    model, _ = canonical_state_dict(load_checkpoint(path)["model"])
    return {k: v for k, v in model.items() if not k.startswith("clip.") or k == "clip.visual.positional_embedding"}


def test_official_checkpoint_resumes_like_our_own_and_adopts_its_settings(world, tmp_path):
    ours = world["checkpoint"]
    official = write_official_checkpoint(ours, str(tmp_path / "official.pth"))

    train_clip_vg.main(common_args(world, tmp_path / "b", "--epochs", "2", "--resume", ours, *FLAGS))
    # --imsize and --vl_dropout left out: taken from the official checkpoint's args (64 and 0).
    argv = without(common_args(world, tmp_path / "c", "--epochs", "2", "--resume", official, *FLAGS),
                   "--imsize", "--vl_dropout")
    summary = train_clip_vg.main(argv)

    assert summary["last_epoch_stats"]["epoch"] == 1
    b, c = trainable(tmp_path / "b" / "checkpoint.pth"), trainable(tmp_path / "c" / "checkpoint.pth")
    assert b.keys() == c.keys()
    for key in b:
        torch.testing.assert_close(b[key], c[key], rtol=0, atol=1e-6, msg=key)
    resumed = load_checkpoint(str(tmp_path / "c" / "checkpoint.pth"))
    assert resumed["args"].imsize == 64 and resumed["args"].vl_dropout == 0
    assert len(resumed["lr_scheduler"]["base_lrs"]) == 1 and resumed["lr_scheduler"]["last_epoch"] == 2
    assert resumed["lr_scheduler"] == load_checkpoint(str(tmp_path / "b" / "checkpoint.pth"))["lr_scheduler"]
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "c" / "log.txt").read_text().splitlines()]
    assert epochs == [1]


def test_retrain_adopts_settings_and_warns_on_a_disagreeing_flag(world, tmp_path, capsys):
    argv = without(common_args(world, tmp_path / "r", "--epochs", "1", "--retrain", world["best"], *FLAGS),
                   "--imsize", "--vl_dropout")
    with pytest.warns(UserWarning, match=r"--vl_dropout 0\.2 differs from the 0\.0 that .*best_checkpoint\.pth"):
        summary = train_clip_vg.main([*argv, "--vl_dropout", "0.2"])
    assert summary["last_epoch_stats"]["epoch"] == 0  # --retrain starts a fresh run
    assert "from the checkpoint: --imsize 64" in capsys.readouterr().out
    stored = load_checkpoint(str(tmp_path / "r" / "checkpoint.pth"))["args"]
    assert stored.imsize == 64 and stored.vl_dropout == 0.2


def test_resume_with_another_kind_of_schedule_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="checkpoint.pth: its lr_scheduler state is a poly/halfdecay/cosine"):
        train_clip_vg.main(common_args(world, tmp_path, "--epochs", "2", "--resume", world["checkpoint"],
                                       "--batch_size", "4", "--lr_scheduler", "step"))


def test_official_step_scheduler_state_converts_and_foreign_group_counts_are_refused():
    params = [torch.nn.Parameter(torch.zeros(2))]
    official_opt = torch.optim.AdamW([{"params": params}] + [{"params": [], "lr": OFFICIAL_EXTRA_LR}] * 3, lr=0.1)
    official = torch.optim.lr_scheduler.StepLR(official_opt, 1)
    for _ in range(2):
        official_opt.step()
        official.step()
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.5)
    ours = torch.optim.lr_scheduler.StepLR(opt, 1)
    ours.load_state_dict(train_clip_vg.scheduler_state_for(official.state_dict(), opt, ours, "official.pth"))
    assert ours.last_epoch == 2 and ours.base_lrs == [0.1]
    assert ours.get_last_lr() == pytest.approx([0.1 * 0.1 ** 2])
    two = dict(official.state_dict(), base_lrs=[0.1, 0.1], _last_lr=[0.1, 0.1])
    with pytest.raises(ValueError, match="official.pth: its lr_scheduler state has 2 parameter groups"):
        train_clip_vg.scheduler_state_for(two, opt, ours, "official.pth")
