"""One real SSA round end to end: the ``python -m curriculum.ssa`` command line (its ``main(argv)``, in this process)
launching the real train_clip_vg.py and reliability script as subprocesses with the plain python launcher, a tiny
CLIP, 24 synthetic pseudo samples, 1 epoch per run.

``--start 0.5 --delta 0.5`` keeps the search to the thresholds 0.0, 0.5 and 1.0, so the round is a measurer run, a
scoring run and at most three candidate runs (a candidate selecting less than one batch is skipped, not trained)."""
import json
import os

import torch

from curriculum import ssa
from curriculum.reliability import load_reliabilities
from curriculum.reliability import select
from datasets import build_dataset
from helpers_clip import tiny_args
from helpers_world import make_world
from utils.checkpoint import load_checkpoint

BATCH = 8


def test_real_ssa_round(tmp_path):
    world = make_world(str(tmp_path / "world"), n_train_pseudo=24, n_val=7, n_train_images=8)
    work = tmp_path / "work"
    train_args = ["--model", world["clip"], "--imsize", "64", "--device", "cpu", "--num_workers", "0",
                  "--batch_size", str(BATCH), "--vl_dropout", "0", "--lr", "1e-3"]
    returned = ssa.main(["--dataset", "synthetic", "--data_root", world["data"], "--split_root", world["splits"],
                         "--work_dir", str(work), "--launcher", "python", "--final_epochs", "1", "--start", "0.5",
                         "--delta", "0.5", "--", *train_args])

    state = json.loads((work / "ssa_state.json").read_text())
    result = json.loads((work / "ssa_result.json").read_text())
    assert returned == result
    assert state["driver"] == "ssa" and state["options"]["candidate_epochs"] == 1
    assert state["options"]["min_samples"] == BATCH  # one batch on one process
    assert all(step["status"] == "done" for step in state["steps"].values())
    assert state["result"]["h_star"] == result["h_star"]

    # The measurer is a real checkpoint; its scores are the reliability script's per-sample file.
    measurer = state["steps"]["measurer"]["result"]["best_checkpoint"]
    assert load_checkpoint(measurer)["args"].imsize == 64
    source = torch.load(os.path.join(world["splits"], "synthetic", "synthetic_train_pseudo.pth"), weights_only=True)
    r = load_reliabilities(result["reliability_file"], source)
    assert len(r) == len(source) == result["n_source"] == 24
    assert os.path.isfile(result["reliability_file"].replace(".jsonl", "_histogram.png"))

    # h*: the best trained candidate of the greedy search; infeasible candidates are skipped, not trained.
    rows = json.loads((work / "ssa_candidates.json").read_text())
    assert {row["h"] for row in rows} <= {0.0, 0.5, 1.0} and 0.5 in {row["h"] for row in rows}
    trained = [row for row in rows if row["val_accu"] is not None]
    for row in rows:
        assert row["n_samples"] == len(select(source, r, row["h"]))
        assert (row["val_accu"] is None) == (row["n_samples"] < BATCH)
    best = max(row["val_accu"] for row in trained)
    chosen = [row for row in rows if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["h"] == result["h_star"] and chosen[0]["val_accu"] == best
    assert result["final_val_accu"] == best
    assert result["final_model"] == os.path.join(chosen[0]["run_dir"], "output", "best_checkpoint.pth")
    table = (work / "ssa_candidates.md").read_text()
    assert f"h* = {result['h_star']:g} ({result['n_selected']} of 24 samples)" in table
    assert table.count("**h\\***") == 1 and len([ln for ln in table.splitlines() if ln.startswith("| ")]) == \
        len(rows) + 1

    # The selected split: percent(H, h*) in the official tuple layout, a ready --split_root.
    selected = torch.load(result["selected_split"], weights_only=True)
    assert selected == select(source, r, result["h_star"]) and len(selected) == result["n_selected"] >= BATCH
    assert all(isinstance(s, tuple) and len(s) == 5 for s in selected)
    args = tiny_args("--dataset", "synthetic", "--data_root", world["data"],
                     "--split_root", result["selected_split_root"])
    assert len(build_dataset("train_pseudo", args, train=True)) == len(selected)
    assert len(build_dataset("val", args, train=False)) == 7
