"""Reliability scoring on 2 processes (torchrun, gloo, CPU) equals 1 process on a split of 7 samples, which the
distributed sampler cannot divide evenly (it pads one): same per-sample rows in split order, same subsets."""
import json
import os

import pytest
import torch

import eval_for_reliability_distribution as scoring
from helpers_world import common_args, make_world, random_checkpoint, torchrun

SUBSETS = [f"refine_0_{t}" for t in range(10)] + ["refine_1_0", "bad_label_0_0", "bad_label_0_4"]


def read_rows(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_two_processes_score_like_one(tmp_path):
    world = make_world(str(tmp_path / "world"), n_train_pseudo=7, n_val=7)
    ckpt = random_checkpoint(world, str(tmp_path / "measurer.pth"), seed=3)
    flags = ("--eval_model", ckpt, "--batch_size", "2")
    one = scoring.main(common_args(world, tmp_path / "one", *flags))
    out = torchrun("eval_for_reliability_distribution.py", common_args(world, tmp_path / "two", *flags), nproc=2)
    assert "rank 0/2" in out.stdout and "backend gloo" in out.stdout

    name = "synthetic_train_pseudo_reliability"
    rows1, rows2 = read_rows(tmp_path / "one" / f"{name}.jsonl"), read_rows(tmp_path / "two" / f"{name}.jsonl")
    split = torch.load(os.path.join(world["splits"], "synthetic", "synthetic_train_pseudo.pth"), weights_only=True)
    assert [r["index"] for r in rows1] == [r["index"] for r in rows2] == list(range(len(split))) == list(range(7))
    assert [r["image"] for r in rows1] == [r["image"] for r in rows2] == [s[0] for s in split]
    for r1, r2 in zip(rows1, rows2):
        assert (r1["query"], r1["target_xyxy"]) == (r2["query"], r2["target_xyxy"])
        assert r1["pred_xyxy"] == pytest.approx(r2["pred_xyxy"], abs=1e-3)
        assert r1["iou"] == pytest.approx(r2["iou"], abs=1e-5)
    assert len({r["iou"] for r in rows1}) > 1  # the measurer's scores vary: the comparison is not vacuous

    summary2 = json.loads((tmp_path / "two" / f"{name}_summary.json").read_text())
    assert one["n"] == summary2["n"] == 7 and one["mean"] == pytest.approx(summary2["mean"], abs=1e-6)
    for suffix in SUBSETS:
        a, b = (torch.load(tmp_path / run / f"synthetic_train_pseudo_{suffix}.pth", weights_only=True)
                for run in ("one", "two"))
        assert a == b, suffix
        assert one["subsets"][suffix]["count"] == summary2["subsets"][suffix]["count"] == len(a)
    assert len(torch.load(tmp_path / "two" / "synthetic_train_pseudo_refine_0_0.pth", weights_only=True)) == \
        sum(r["iou"] > 0 for r in rows2)
