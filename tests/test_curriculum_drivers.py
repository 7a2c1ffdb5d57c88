"""Runner, SSA and MSA drivers end to end with stub training / scoring scripts (stdlib only, fast).

The stub trainer reads its training split and validation split, "trains" for --epochs epochs and writes the files
train_clip_vg.py writes (log.txt with the arguments line then one JSON line per epoch, checkpoint.pth,
best_checkpoint.pth, result.json). Its accuracy is a known function of the training set: 0.1 + (clean - 1.5 *
noisy) / 1000 at the last epoch. STUB_FAIL makes it exit 3 ("1"), raise ("raise") or be interrupted after epoch 0
("interrupt"); STUB_THREADS makes it set torch's thread count. The stub scorer writes the per-sample JSON lines
(reliability = the score stored in each sample, times 0.8 for a measurer trained on another source) and a summary.
Both stubs expose ``main(argv)``, so they also run with the in-process launcher. Every launch is appended to a
calls file, so the tests can prove that no finished run is ever repeated.
"""
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from curriculum import msa, ssa
from curriculum.algorithm import best_measurer
from curriculum.reliability import load_reliabilities, select
from curriculum.runs.cache import samples_fingerprint
from curriculum.runs.command_line import budget_epochs, default_min_samples
from curriculum.runs.launchers import RunFailedError, TrainLauncher
from curriculum.runs.lock import work_dir_lock
from curriculum.runs.processes import launcher_prefix
from curriculum.runs.state import DriverState
from curriculum.search import SearchResult, greedy_threshold_search
from curriculum.subset_files import threshold_tag
from datasets.records import load_split_file
from utils.errors import InputError, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STUB_TRAIN = r'''
import argparse, json, os, pickle, sys, time, zipfile

def load(path):
    with zipfile.ZipFile(path) as z:
        return pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))

def main(argv=None):
    p = argparse.ArgumentParser()
    for flag in ("--dataset", "--data_root", "--split_root", "--output_dir", "--resume", "--sup_type"):
        p.add_argument(flag, default="")
    p.add_argument("--epochs", type=int, default=90)
    args, rest = p.parse_known_args(argv)
    fail = os.environ.get("STUB_FAIL", "")
    if os.environ.get("STUB_THREADS"):
        import torch
        torch.set_num_threads(int(os.environ["STUB_THREADS"]))
    if fail in ("1", "raise"):
        print("boom: the stub was told to fail", file=sys.stderr)
        if fail == "raise":
            raise ValueError("the stub raised")
        sys.exit(3)
    split = "train" if args.sup_type == "full" else "train_pseudo"
    samples = load(os.path.join(args.split_root, args.dataset, f"{args.dataset}_{split}.pth"))
    load(os.path.join(args.split_root, args.dataset, f"{args.dataset}_val.pth"))
    clean = sum("clean" in s[0] for s in samples)
    accuracy = 0.1 + (clean - 1.5 * (len(samples) - clean)) / 1000.0
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, "checkpoint.pth")
    start = json.load(open(ckpt))["epoch"] + 1 if args.resume == "auto" and os.path.exists(ckpt) else 0
    calls = os.environ["STUB_CALLS"]
    n_calls = sum(1 for _ in open(calls)) if os.path.exists(calls) else 0
    with open(calls, "a") as fh:
        fh.write(json.dumps({"script": "train", "output_dir": out, "start_epoch": start, "split": split,
                             "n": len(samples), "extra": rest}) + "\n")
    log = os.path.join(out, "log.txt")
    if start == 0:
        open(log, "w").write(repr(vars(args)) + "\n")
    sources = sorted({s[0].split("_")[0] for s in samples})
    for epoch in range(start, args.epochs):
        val = round(accuracy - 0.01 * (args.epochs - 1 - epoch), 6)
        json.dump({"epoch": epoch}, open(ckpt, "w"))
        best = os.path.join(out, "best_checkpoint.pth")
        json.dump({"epoch": epoch, "val_accu": val, "sources": sources}, open(best, "w"))
        with open(log, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "val_accu": val, "val_miou": val / 2}) + "\n")
        print(f"| epoch {epoch}: val accuracy {val:.4f}", flush=True)
        if fail == "interrupt" and epoch == 0:
            raise KeyboardInterrupt
        if os.environ.get("STUB_HANG_AT") == str(n_calls) and epoch == 0:
            open(os.environ["STUB_HANG_MARKER"], "w").write(out)
            time.sleep(600)
    json.dump({"best_val_accu": accuracy}, open(os.path.join(out, "result.json"), "w"))


if __name__ == "__main__":
    main()
'''

STUB_SCORE = r'''
import argparse, json, os, pickle, zipfile

def load(path):
    with zipfile.ZipFile(path) as z:
        return pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))

def main(argv=None):
    p = argparse.ArgumentParser()
    for flag in ("--eval_model", "--dataset", "--eval_set", "--data_root", "--split_root", "--output_dir"):
        p.add_argument(flag, default="")
    args, rest = p.parse_known_args(argv)
    samples = load(os.path.join(args.split_root, args.dataset, f"{args.dataset}_{args.eval_set}.pth"))
    measurer = json.load(open(args.eval_model))
    with open(os.environ["STUB_CALLS"], "a") as fh:
        fh.write(json.dumps({"script": "score", "output_dir": args.output_dir, "extra": rest}) + "\n")
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, f"{args.dataset}_{args.eval_set}_reliability")
    rows = []
    for i, s in enumerate(samples):
        base = float(s[1][2:])
        r = base if s[0].split("_")[0] in measurer["sources"] else round(base * 0.8, 6)
        rows.append({"index": i, "image": s[0], "query": s[3], "target_xyxy": [0, 0, 1, 1],
                     "pred_xyxy": [0, 0, 1, 1], "iou": r})
    open(stem + ".jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
    json.dump({"n": len(rows), "mean": sum(r["iou"] for r in rows) / len(rows)}, open(stem + "_summary.json", "w"))


if __name__ == "__main__":
    main()
'''


def make_source(name, n, seed, phrase):
    """Samples of one pseudo source: stored score r=..., clean/noisy flag correlated with it."""
    rng = random.Random(seed)
    samples = []
    for k in range(n):
        base = round(rng.random(), 3)
        clean = base + rng.uniform(-0.25, 0.25) > 0.45
        samples.append((f"{name}_{k:04d}_{'clean' if clean else 'noisy'}.jpg", f"r={base}", [1.0, 2.0, 30.0, 40.0],
                        phrase, "useless placeholder"))
    return samples


def stub_accuracy(samples):
    clean = sum("clean" in s[0] for s in samples)
    return 0.1 + (clean - 1.5 * (len(samples) - clean)) / 1000.0


@pytest.fixture
def world(tmp_path, monkeypatch):
    (tmp_path / "stub_train.py").write_text(STUB_TRAIN)
    (tmp_path / "stub_score.py").write_text(STUB_SCORE)
    split_root = tmp_path / "splits" / "unc"
    split_root.mkdir(parents=True)
    torch.save(make_source("val", 5, 0, "a thing"), split_root / "unc_val.pth")
    torch.save(make_source("testA", 5, 1, "a thing"), split_root / "unc_testA.pth")
    torch.save(make_source("pseudo", 120, 2, "left red car"), split_root / "unc_train_pseudo.pth")
    torch.save(make_source("human", 60, 3, "the red car"), split_root / "unc_train.pth")
    sources = {"caption": make_source("caption", 50, 4, "a man with a dog riding a horse near a car"),
               "template": make_source("template", 50, 5, "left red car"),
               "relation": make_source("relation", 50, 6, "man near horse")}
    for name, samples in sources.items():
        torch.save(samples, tmp_path / f"{name}.pth")
    monkeypatch.setenv("STUB_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("STUB_HANG_AT", raising=False)
    monkeypatch.delenv("STUB_FAIL", raising=False)
    monkeypatch.delenv("STUB_THREADS", raising=False)
    return tmp_path


def calls(world):
    path = world / "calls.jsonl"
    return [json.loads(line) for line in open(path)] if path.exists() else []


def launches_per_run(world):
    counts = {}
    for c in calls(world):
        counts[c["output_dir"]] = counts.get(c["output_dir"], 0) + 1
    return counts


def common_argv(world, work, *driver_args, train_args=("--batch_size", "4", "--lr", "0.001"), launcher="python"):
    return ["--dataset", "unc", "--data_root", str(world / "images"), "--split_root", str(world / "splits"),
            "--work_dir", str(world / work), "--train_script", str(world / "stub_train.py"),
            "--score_script", str(world / "stub_score.py"), "--final_epochs", "2", "--launcher", launcher,
            *driver_args, "--", *train_args]


def msa_sources(world):
    return ",".join(f"{n}:{world / (n + '.pth')}" for n in ("caption", "template", "relation"))


def comparable(result):
    """What must not depend on interruptions: the decisions, accuracies and selected data."""
    keys = ("h_star", "final_val_accu", "n_selected", "order", "steps", "n_source")
    out = {k: result[k] for k in keys if k in result}
    for step in out.get("steps", []):
        step.pop("best_run", None), step.pop("best_model", None), step.pop("separate_file", None)
    out["selected"] = load_split_file(result["selected_split"])
    return out


# ---------------------------------------------------------------------------------------------------- runner


def test_launcher_prefix():
    assert launcher_prefix(None) == [sys.executable]
    assert launcher_prefix("python") == [sys.executable]
    assert launcher_prefix("torchrun --nproc_per_node=4 --master_port 29500") == [
        "torchrun", "--nproc_per_node=4", "--master_port", "29500"]
    assert launcher_prefix("python -m torch.distributed.run --nproc_per_node=2")[:3] == [
        sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.parametrize("spec", ["python", "inprocess"])
def test_runner_reuses_adopts_and_sets_aside(world, spec):
    launcher = TrainLauncher(spec, str(world / "stub_train.py"), ["--batch_size", "4"], echo="none")
    samples = make_source("pseudo", 20, 9, "left red car")
    run_dir = world / "runs" / "one"
    first = launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)
    assert not first["reused"] and first["result"]["val_accu"] == pytest.approx(stub_accuracy(samples))
    assert first["result"]["best_epoch"] == 1 and first["command"][-2:] == ["--resume", "auto"]
    assert first["command"][:2] == [*launcher_prefix(spec), str(world / "stub_train.py")]
    again = launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)
    assert again["reused"] and len(calls(world)) == 1
    os.remove(run_dir / "run.json")  # killed after the run finished, before it was recorded: moved aside, rerun
    launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)
    assert (world / "runs" / "one.stale-1" / "output" / "log.txt").exists() and len(calls(world)) == 2
    record = json.load(open(run_dir / "run.json"))
    record["status"] = "running"  # killed after the output was complete: adopted without a launch
    json.dump(record, open(run_dir / "run.json", "w"))
    assert launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)["reused"]
    assert len(calls(world)) == 2
    other = samples[:10]  # other data in the same folder: moved aside, never mixed
    result = launcher.run(str(run_dir), "unc", "img", str(world / "splits"), other, epochs=2)
    assert result["result"]["val_accu"] == pytest.approx(stub_accuracy(other))
    assert (world / "runs" / "one.stale-2").is_dir() and len(calls(world)) == 3


def test_run_cache_trains_identical_runs_once(world):
    launcher = TrainLauncher("inprocess", str(world / "stub_train.py"), ["--batch_size", "4"], echo="none",
                             run_cache=str(world / "cache"))
    samples = make_source("pseudo", 20, 9, "left red car")
    first = launcher.run(str(world / "a"), "unc", "img", str(world / "splits"), samples, epochs=2)
    # the same command (apart from its folder), data and linked split files elsewhere: reused, nothing launched
    same = launcher.run(str(world / "b"), "unc", "img", str(world / "splits"), samples, epochs=2)
    assert same["reused_from"] == first["run_dir"] and same["result"] == first["result"]
    assert len(calls(world)) == 1 and not (world / "b").exists()
    # other epochs, other samples, another validation split: trained
    launcher.run(str(world / "c"), "unc", "img", str(world / "splits"), samples, epochs=3)
    launcher.run(str(world / "d"), "unc", "img", str(world / "splits"), samples[:10], epochs=2)
    shutil.copytree(world / "splits", world / "other_splits")
    torch.save(make_source("val", 6, 0, "a thing"), world / "other_splits" / "unc" / "unc_val.pth")
    launcher.run(str(world / "e"), "unc", "img", str(world / "other_splits"), samples, epochs=2)
    assert len(calls(world)) == 4
    # without the cache, or once the cached run is gone, nothing is shared
    plain = TrainLauncher("inprocess", str(world / "stub_train.py"), ["--batch_size", "4"], echo="none")
    plain.run(str(world / "f"), "unc", "img", str(world / "splits"), samples, epochs=2)
    shutil.rmtree(world / "a")
    assert not launcher.run(str(world / "g"), "unc", "img", str(world / "splits"), samples, epochs=2)["reused"]
    assert len(calls(world)) == 6


def test_ssa_and_msa_sharing_a_run_cache_train_each_identical_run_once(world):
    sources = ("--sources", msa_sources(world), "--source_specific_only")
    plain = msa.main(common_argv(world, "msa_plain", *sources, launcher="inprocess"))
    n_plain = len(calls(world))
    # SSA on the template source (the first MSA step's data), then MSA, with one run cache
    shutil.copytree(world / "splits", world / "template_root")
    shutil.copyfile(world / "template.pth", world / "template_root" / "unc" / "unc_train_pseudo.pth")
    cache = ("--run_cache", str(world / "cache"))
    argv = common_argv(world, "ssa", *cache, launcher="inprocess")
    argv[argv.index("--split_root") + 1] = str(world / "template_root")
    single = ssa.main(argv)
    n_ssa = len(calls(world)) - n_plain
    shared = msa.main(common_argv(world, "msa", *sources, *cache, launcher="inprocess"))
    assert comparable(shared) == comparable(plain)
    # measurer, scoring and the first step's candidates (the SSA search) come from SSA's runs
    assert shared["steps"][0]["source"] == "template" and shared["steps"][0]["h_star"] == single["h_star"]
    assert len(calls(world)) - n_plain - n_ssa == n_plain - n_ssa


@pytest.mark.parametrize("spec", ["python", "inprocess"])
def test_runner_failure_names_the_log(world, monkeypatch, spec):
    monkeypatch.setenv("STUB_FAIL", "1")
    launcher = TrainLauncher(spec, str(world / "stub_train.py"), echo="none")
    with pytest.raises(RunFailedError) as info:
        launcher.run(str(world / "runs" / "bad"), "unc", "img", str(world / "splits"),
                     make_source("p", 3, 0, "x"), epochs=1)
    assert "exit code 3" in str(info.value) and str(world / "runs" / "bad" / "launch.log") in str(info.value)
    assert "boom" in str(info.value)


@pytest.mark.parametrize("fail", ["", "raise"])
def test_inprocess_runner_logs_echoes_and_restores_the_process_state(world, monkeypatch, capsys, fail):
    threads, streams, cwd = torch.get_num_threads(), (sys.stdout, sys.stderr), os.getcwd()
    monkeypatch.setenv("STUB_FAIL", fail)
    monkeypatch.setenv("STUB_THREADS", str(threads + 1))
    launcher = TrainLauncher("inprocess", str(world / "stub_train.py"), cwd=str(world))
    run_dir = world / "runs" / "inproc"
    with pytest.raises(RunFailedError) if fail else contextlib.nullcontext() as info:
        launcher.run(str(run_dir), "unc", "img", str(world / "splits"), make_source("p", 6, 0, "x"), epochs=2)
    assert torch.get_num_threads() == threads and (sys.stdout, sys.stderr) == streams
    assert os.getcwd() == cwd
    log = (run_dir / "launch.log").read_text()
    assert log.startswith("=== ") and f"attempt 1: inprocess {world / 'stub_train.py'} --dataset unc" in log
    record = json.load(open(run_dir / "run.json"))
    assert record["pid"] == os.getpid() and record["command"][0] == "inprocess"
    if fail:  # stderr, then the traceback, in the log and quoted, as a failing subprocess would show them
        assert "exit code 1" in str(info.value) and str(run_dir / "launch.log") in str(info.value)
        assert "boom: the stub was told to fail" in log and "ValueError: the stub raised" in str(info.value)
        assert record["status"] == "running"
    else:  # stdout in the log, progress lines echoed with the run's tag
        assert "| epoch 0: val accuracy" in log and record["status"] == "done"
        assert "[inproc] | epoch 1: val accuracy" in capsys.readouterr().out


def test_inprocess_runner_resumes_an_interrupted_attempt(world, monkeypatch):
    launcher = TrainLauncher("inprocess", str(world / "stub_train.py"), echo="none")
    run_dir, samples = world / "runs" / "cut", make_source("p", 6, 0, "x")
    monkeypatch.setenv("STUB_FAIL", "interrupt")
    with pytest.raises(KeyboardInterrupt):  # the driver is interrupted: the run is left running, not failed
        launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)
    assert json.load(open(run_dir / "run.json"))["status"] == "running"
    monkeypatch.delenv("STUB_FAIL")
    record = launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)
    assert record["attempts"] == 2 and record["result"]["epochs_logged"] == 2
    assert [c["start_epoch"] for c in calls(world)] == [0, 1]  # --resume auto: from its own checkpoint
    assert (run_dir / "launch.log").read_text().count("=== ") == 2


# ---------------------------------------------------------------------------------------------------- SSA


def expected_ssa(world, delta=0.1, **search):
    source = torch.load(world / "splits" / "unc" / "unc_train_pseudo.pth", weights_only=True)
    r = [float(s[1][2:]) for s in source]
    found = greedy_threshold_search(lambda h: stub_accuracy(select(source, r, h)), delta=delta, **search)
    return found, select(source, r, found.h_star)


@pytest.mark.parametrize("launcher", ["python", "inprocess"])
def test_ssa_end_to_end(world, capsys, launcher):
    result = ssa.main(common_argv(world, "ssa", launcher=launcher))
    found, chosen = expected_ssa(world)
    assert result["h_star"] == pytest.approx(found.h_star)
    assert result["final_val_accu"] == pytest.approx(found.accuracy)
    assert load_split_file(result["selected_split"]) == chosen
    assert load_split_file(str(world / "ssa" / "selected" / "unc" / "unc_val.pth")) == make_source("val", 5, 0,
                                                                                                   "a thing")
    assert [c["h"] for c in result["candidates"]] == pytest.approx([e["h"] for e in found.evaluations])
    assert result["final_model"].endswith(os.path.join(f"h_{threshold_tag(found.h_star)}", "output",
                                                       "best_checkpoint.pth"))
    # every run once: measurer + scoring + one per candidate; training arguments passed through
    launches = launches_per_run(world)
    assert set(launches.values()) == {1} and len(launches) == 2 + len(found.evaluations)
    assert all(c["extra"][:4] == ["--batch_size", "4", "--lr", "0.001"] for c in calls(world))
    # recorded state: options, every step's command, output folder and result
    state = json.load(open(world / "ssa" / "ssa_state.json"))
    assert state["options"]["delta"] == 0.1 and state["options"]["candidate_epochs"] == 2
    assert {"measurer", "scoring"} <= set(state["steps"])
    for name, step in state["steps"].items():
        assert "skipped" not in step
        assert step["status"] == "done" and step["command"][1].endswith(("stub_train.py", "stub_score.py"))
        assert os.path.isdir(step["output_dir"])
    assert state["result"]["h_star"] == result["h_star"]
    table = (world / "ssa" / "ssa_candidates.md").read_text()
    assert "**h\\***" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + len(found.evaluations)
    assert json.load(open(world / "ssa" / "ssa_candidates.json")) == json.loads(json.dumps(result["candidates"]))
    assert "| epoch 1:" in capsys.readouterr().out  # progress is shown
    # a second invocation is a no-op
    assert comparable(ssa.main(common_argv(world, "ssa", launcher=launcher))) == comparable(result)
    assert len(calls(world)) == 2 + len(found.evaluations)


def test_parallel_candidates_change_nothing_but_how_many_run_at_once(world):
    def without_folders(rows):
        return [{k: v for k, v in row.items() if k != "run_dir"} for row in rows]

    sequential = ssa.main(common_argv(world, "ssa"))
    parallel = ssa.main(common_argv(world, "ssa_parallel", "--parallel_candidates", "3"))
    assert comparable(parallel) == comparable(sequential)
    assert without_folders(parallel["candidates"]) == without_folders(sequential["candidates"])
    sources = msa_sources(world)
    msa_seq = msa.main(common_argv(world, "msa", "--sources", sources))
    msa_par = msa.main(common_argv(world, "msa_parallel", "--sources", sources, "--parallel_candidates", "2"))
    assert comparable(msa_par) == comparable(msa_seq)
    # in-process drivers train parallel candidates in fresh interpreters, everything else in their own process
    mixed = ssa.main(common_argv(world, "ssa_mixed", "--parallel_candidates", "2", launcher="inprocess"))
    assert comparable(mixed) == comparable(sequential)
    steps = json.load(open(world / "ssa_mixed" / "ssa_state.json"))["steps"]
    prefixes = {name: step["command"][0] for name, step in steps.items()}
    assert prefixes.pop("measurer") == prefixes.pop("scoring") == "inprocess"
    assert set(prefixes.values()) == {sys.executable} and len(prefixes) == len(sequential["candidates"])


def test_ssa_cheap_candidates_then_final_run_and_full_supervision(world):
    argv = common_argv(world, "ssa", "--candidate_epochs", "1", "--final_epochs", "3",
                       train_args=("--sup_type", "full"))
    result = ssa.main(argv)
    source = torch.load(world / "splits" / "unc" / "unc_train.pth", weights_only=True)
    r = [float(s[1][2:]) for s in source]
    found = greedy_threshold_search(lambda h: stub_accuracy(select(source, r, h)))
    assert result["h_star"] == pytest.approx(found.h_star)
    assert result["final_run_dir"].endswith(f"final_h_{threshold_tag(found.h_star)}")
    assert result["final_val_accu"] == pytest.approx(found.accuracy)
    assert result["candidate_val_accu"] == pytest.approx(found.accuracy)
    assert result["selected_split"].endswith(os.path.join("unc", "unc_train.pth"))
    train_calls = [c for c in calls(world) if c["script"] == "train"]
    assert {c["split"] for c in train_calls} == {"train"}
    final = json.load(open(world / "ssa" / "ssa_state.json"))["steps"][f"final_h_{threshold_tag(found.h_star)}"]
    assert "--epochs" in final["command"] and final["command"][final["command"].index("--epochs") + 1] == "3"
    assert final["result"]["epochs_logged"] == 3


def test_ssa_options_change_is_refused_unless_forced(world):
    ssa.main(common_argv(world, "ssa"))
    before = launches_per_run(world)
    with pytest.raises(SystemExit, match="delta: recorded 0.1, now 0.2"):
        ssa.main(common_argv(world, "ssa", "--delta", "0.2"))
    result = ssa.main(common_argv(world, "ssa", "--delta", "0.2", "--force"))
    found, chosen = expected_ssa(world, delta=0.2)
    assert result["h_star"] == pytest.approx(found.h_star) and load_split_file(result["selected_split"]) == chosen
    after = launches_per_run(world)
    assert all(after[k] == 1 for k in before)  # measurer, scoring and shared thresholds were not rerun
    state = json.load(open(world / "ssa" / "ssa_state.json"))
    assert state["options"]["delta"] == 0.2 and state["superseded"][0]["options"]["delta"] == 0.1


def test_min_gain_is_passed_to_the_search_and_recorded(world):
    plain, _ = expected_ssa(world, start=0.3)
    first = plain.trace[0]
    gain = first["acc_r"] - first["acc_m"]  # from 0.3 the stub's accuracy rises by 0.0035 to 0.4, then more
    assert plain.h_star == pytest.approx(0.5) and first["move"] == "right" and 0.0 < gain < 0.005
    result = ssa.main(common_argv(world, "ssa", "--start", "0.3", "--min_gain", "0.005"))
    found, chosen = expected_ssa(world, start=0.3, min_gain=0.005)
    assert result["h_star"] == found.h_star == pytest.approx(0.3)
    assert load_split_file(result["selected_split"]) == chosen
    assert len(result["candidates"]) == 3
    assert json.load(open(world / "ssa" / "ssa_state.json"))["options"]["min_gain"] == 0.005
    with pytest.raises(UsageError, match="--min_gain 1.0"):
        ssa.main(common_argv(world, "ssa", "--min_gain", "1.0"))


def test_ssa_with_a_given_measurer_trains_none(world):
    first = ssa.main(common_argv(world, "ssa"))
    n_calls = len(calls(world))
    second = ssa.main(common_argv(world, "ssa2", "--measurer", first["measurer"]))
    new = calls(world)[n_calls:]
    assert not any(c["output_dir"].endswith(os.path.join("measurer", "output")) for c in new)
    assert sum(c["script"] == "score" for c in new) == 1
    assert second["h_star"] == first["h_star"] and second["measurer"] == first["measurer"]
    state = json.load(open(world / "ssa2" / "ssa_state.json"))
    assert state["steps"]["measurer"]["kind"] == "given" and state["options"]["measurer"] == first["measurer"]


def test_ssa_refuses_flags_it_controls(world):
    with pytest.raises(UsageError, match="--candidate_epochs"):
        ssa.main(common_argv(world, "ssa", train_args=("--epochs", "5")))
    with pytest.raises(UsageError, match="--output_dir"):
        ssa.main(common_argv(world, "ssa", train_args=("--output_dir=x",)))


class Killed(BaseException):
    pass


def _kill_on_save(monkeypatch, n):
    """Make the n-th state write raise, as if the driver were killed right there."""
    original, count = DriverState.save, [0]

    def save(self):
        count[0] += 1
        if count[0] == n:
            raise Killed(n)
        original(self)

    monkeypatch.setattr(DriverState, "save", save)
    return lambda: monkeypatch.setattr(DriverState, "save", original)


@pytest.mark.parametrize("kill_at", [3, 5, 8, 12])
def test_ssa_killed_at_any_step_resumes_without_repeating(world, monkeypatch, kill_at):
    restore = _kill_on_save(monkeypatch, kill_at)
    with pytest.raises(Killed):
        ssa.main(common_argv(world, "ssa"))
    restore()
    result = ssa.main(common_argv(world, "ssa"))
    found, chosen = expected_ssa(world)
    assert set(launches_per_run(world).values()) == {1}  # nothing launched twice
    assert len(launches_per_run(world)) == 2 + len(found.evaluations)
    assert result["h_star"] == pytest.approx(found.h_star) and load_split_file(result["selected_split"]) == chosen


@pytest.mark.parametrize("how", ["SIGKILL to driver and run", "SIGTERM to the driver"])
def test_ssa_killed_during_a_training_run_resumes_it_from_its_checkpoint(world, how):
    marker = world / "hung"
    env = {**os.environ, "STUB_HANG_AT": "3", "STUB_HANG_MARKER": str(marker), "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "curriculum.ssa", *common_argv(world, "ssa")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the stub never reached the hang point"
        hung = marker.read_text()
        record = json.load(open(os.path.join(os.path.dirname(hung), "run.json")))
        if how.startswith("SIGTERM"):
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=60) == 128 + signal.SIGTERM
            assert not os.path.exists(world / "ssa" / ".driver.lock")  # released on the way out
            with pytest.raises(ProcessLookupError):
                os.kill(record["pid"], 0)  # the driver stopped its run
    finally:
        with contextlib.suppress(ProcessLookupError):  # after SIGTERM the whole group is already gone
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    result = ssa.main(common_argv(world, "ssa"))
    launches = launches_per_run(world)
    assert launches.pop(hung) == 2 and set(launches.values()) == {1}
    second = [c for c in calls(world) if c["output_dir"] == hung][1]
    assert second["start_epoch"] == 1  # continued from its own checkpoint (--resume auto)
    found, chosen = expected_ssa(world)
    assert result["h_star"] == pytest.approx(found.h_star) and load_split_file(result["selected_split"]) == chosen
    run_record = json.load(open(os.path.join(os.path.dirname(hung), "run.json")))
    assert run_record["attempts"] == 2 and run_record["status"] == "done"


HOLD_LOCK = ("import sys, time\nfrom curriculum.runs.lock import work_dir_lock\n"
             "with work_dir_lock(sys.argv[1]):\n    print('up', flush=True)\n    time.sleep(60)\n")
"""A driver's lock held by a process of its own (argv: work folder, then a marker for its command line)."""


def test_a_live_earlier_attempt_or_driver_is_not_run_over(world):
    launcher = TrainLauncher("python", str(world / "stub_train.py"), echo="none")
    run_dir = world / "runs" / "busy"
    samples = make_source("pseudo", 8, 1, "x")
    command = launcher.command(str(run_dir), "unc", "img", 2)
    output_dir = str(run_dir / "output")
    (world / "w").mkdir()
    # an earlier run's process, also holding the work folder's lock as a driver does
    orphan = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(world / "w"), output_dir], cwd=ROOT,
                              stdout=subprocess.PIPE)
    try:
        assert orphan.stdout.readline() == b"up\n"  # started (its command line is in place)
        run_dir.mkdir(parents=True)
        json.dump({"command": command, "fingerprint": samples_fingerprint(samples), "status": "running",
                   "output_dir": output_dir, "pid": orphan.pid, "host": socket.gethostname()},
                  open(run_dir / "run.json", "w"))
        with pytest.raises(RunFailedError, match=f"pid {orphan.pid}.*still running"):
            launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)
        with pytest.raises(InputError, match=f"in use by another driver \\(pid {orphan.pid} on host"):
            with work_dir_lock(str(world / "w")):
                pass
    finally:
        orphan.kill()
        orphan.wait()
    with work_dir_lock(str(world / "w")):  # the holder is gone: its lock is taken over
        assert json.load(open(world / "w" / ".driver.lock"))["pid"] == os.getpid()
    assert not (world / "w" / ".driver.lock").exists()
    assert launcher.run(str(run_dir), "unc", "img", str(world / "splits"), samples, epochs=2)["result"]["epochs"] == 2


def test_update_budget_gives_every_run_exactly_that_many_steps(world):
    assert budget_epochs(100, 7, None, 4) == 7  # no budget: the fixed epochs
    assert budget_epochs(100, 7, 50, 4) == 2 and budget_epochs(10, 7, 50, 4) == 25 and budget_epochs(3, 7, 5, 4) == 5
    result = ssa.main(common_argv(world, "ssa", "--update_budget", "30"))
    state = json.load(open(world / "ssa" / "ssa_state.json"))
    trained = [step for step in state["steps"].values() if step.get("kind") == "train"]
    assert trained and state["options"]["update_budget"] == 30
    for step in trained:  # batch 4, one process: n // 4 steps per epoch; the epochs that hold 30 steps, cut at 30
        command = step["command"]
        epochs = int(command[command.index("--epochs") + 1])
        per_epoch = step["n_samples"] // 4
        assert epochs * per_epoch >= 30 > (epochs - 1) * per_epoch, step
        assert command[command.index("--max_steps") + 1] == "30"
    assert len({int(s["command"][s["command"].index("--epochs") + 1]) for s in trained}) > 1
    assert result["h_star"] is not None
    with pytest.raises(UsageError, match="--update_budget 0"):
        ssa.main(common_argv(world, "ssa2", "--update_budget", "0"))
    with pytest.raises(UsageError, match="do not pass --max_steps"):
        ssa.main([*common_argv(world, "ssa3", "--update_budget", "30"), "--max_steps", "5"])


def test_candidate_and_measurer_budgets_make_a_cheap_search_and_one_final_run(world):
    result = ssa.main(common_argv(world, "ssa", "--update_budget", "30", "--candidate_budget", "12",
                                  "--measurer_budget", "10"))
    state = json.load(open(world / "ssa" / "ssa_state.json"))
    steps = {name: s for name, s in state["steps"].items() if s.get("kind") == "train"}

    def max_steps(step):
        return int(step["command"][step["command"].index("--max_steps") + 1])

    final = f"final_h_{threshold_tag(result['h_star'])}"
    assert result["final_run_dir"].endswith(final) and max_steps(steps[final]) == 30
    assert max_steps(steps["measurer"]) == 10
    candidates = [s for name, s in steps.items() if name.startswith("h_")]
    assert candidates and all(max_steps(s) == 12 for s in candidates)
    assert steps[final]["n_samples"] == len(load_split_file(result["selected_split"]))
    assert state["options"]["candidate_budget"] == 12 and state["options"]["measurer_budget"] == 10
    with pytest.raises(UsageError, match="--candidate_budget needs --update_budget"):
        ssa.main(common_argv(world, "ssa2", "--candidate_budget", "12"))
    with pytest.raises(UsageError, match="--measurer_budget 0"):
        ssa.main(common_argv(world, "ssa2", "--update_budget", "30", "--measurer_budget", "0"))


def test_search_only_stops_before_the_final_run_and_the_same_command_then_trains_only_that(world):
    budgets = ("--update_budget", "30", "--candidate_budget", "12")
    for driver, work, extra in ((ssa, "ssa", ()), (msa, "msa", ("--sources", msa_sources(world)))):
        searched = driver.main([*common_argv(world, work, *budgets, *extra, "--search_only")])
        assert searched["final_model"] is None and searched["final_val_accu"] is None
        assert len(load_split_file(searched["selected_split"])) == searched["n_selected"] > 0
        state_path = world / work / f"{work}_state.json"
        before = json.load(open(state_path))["steps"]
        assert not [name for name in before if name.startswith("final")]
        report = "ssa_candidates.md" if driver is ssa else "msa_table.md"
        assert "not trained yet (--search_only" in (world / work / report).read_text()

        done = driver.main(common_argv(world, work, *budgets, *extra))
        after = json.load(open(state_path))["steps"]
        new = sorted(set(after) - set(before))
        assert len(new) == 1 and new[0].startswith("final") and done["final_run_dir"] == after[new[0]]["run_dir"]
        assert all(after[name] == step for name, step in before.items())  # nothing else ran again
        assert done["n_selected"] == searched["n_selected"] and done["final_model"]
        assert "not trained yet" not in (world / work / report).read_text()


def test_default_min_samples_is_one_batch_per_process():
    assert default_min_samples(["--batch_size", "64"], "torchrun --nproc_per_node=4") == 256
    assert default_min_samples(["--batch_size=16"], "python -m torch.distributed.run --nproc-per-node 2") == 32
    assert default_min_samples([], "python") == 8  # the train script's default batch size


# ---------------------------------------------------------------------------------------------------- MSA


def expected_msa(world, specific_only=False):
    order = ["template", "relation", "caption"]
    samples = {n: torch.load(world / f"{n}.pth", weights_only=True) for n in order}
    chosen, steps = [], []
    for j in order:
        best = None
        for i in ([j] if specific_only else order):
            r = [float(s[1][2:]) * (1.0 if i == j else 0.8) for s in samples[j]]
            r = [round(v, 6) for v in r]
            found = greedy_threshold_search(lambda h: stub_accuracy(chosen + select(samples[j], r, h)))
            key = (found.accuracy, i == j, -order.index(i))
            if best is None or key > best[0]:
                best = (key, i, found.h_star, select(samples[j], r, found.h_star))
        steps.append((j, best[1], best[2]))
        chosen = chosen + best[3]
    return order, steps, chosen


def test_another_measurer_replaces_the_source_specific_one_only_by_more_than_min_gain():
    def found(acc):
        return SearchResult(h_star=0.5, accuracy=acc)

    order = ["template", "relation", "caption"]
    results = {"template": found(0.300), "relation": found(0.305), "caption": found(None)}
    assert best_measurer(results, "template", order) == "relation"
    assert best_measurer(results, "template", order, min_gain=0.01) == "template"
    assert best_measurer(results, "template", order, min_gain=0.001) == "relation"
    assert best_measurer({**results, "relation": found(0.300)}, "template", order) == "template"  # a tie
    assert best_measurer({**results, "template": found(None)}, "template", order, min_gain=0.5) == "relation"


@pytest.mark.parametrize("launcher", ["python", "inprocess"])
def test_msa_end_to_end(world, launcher):
    result = msa.main(common_argv(world, "msa", "--sources", msa_sources(world), launcher=launcher))
    order, steps, chosen = expected_msa(world)
    assert result["order"] == order  # by mean entities: 1 (left red car) < 2 < 4
    assert result["mean_entities"] == {"template": 1.0, "relation": 2.0, "caption": 4.0}
    assert [(s["source"], s["measurer"], s["h_star"]) for s in result["steps"]] == [
        (j, i, pytest.approx(h)) for j, i, h in steps]
    assert load_split_file(result["selected_split"]) == chosen and result["n_selected"] == len(chosen)
    assert result["final_val_accu"] == pytest.approx(stub_accuracy(chosen))
    separate = sorted(os.listdir(world / "msa" / "selected" / "unc" / "train_separate"))
    assert separate == [f"{k}_unc_train_pseudo_{j}_{threshold_tag(h)}.pth" for k, (j, _, h) in enumerate(steps, 1)]
    assert os.path.exists(world / "msa" / "selected" / "unc" / "unc_val.pth")
    matrix = result["reliability_matrix"]
    assert all(matrix[i][j]["type"] == ("SR" if i == j else "CR") for i in order for j in order)
    assert (world / "msa" / "msa_reliability_matrix.png").read_bytes()[:4] == b"\x89PNG"
    scored = load_reliabilities(matrix["template"]["caption"]["reliability_file"])
    assert scored.tolist() == pytest.approx([round(float(s[1][2:]) * 0.8, 6) for s in
                                             torch.load(world / "caption.pth", weights_only=True)])
    launches = launches_per_run(world)
    assert set(launches.values()) == {1}
    assert sum(1 for c in calls(world) if c["script"] == "score") == 9
    report = (world / "msa" / "msa_table.md").read_text()
    assert "## Reliability matrix" in report and report.count("**chosen**") == 3
    n_candidates = len(json.load(open(world / "msa" / "msa_candidates.json")))
    assert len([k for k in launches if "step" in k]) == n_candidates
    assert msa.main(common_argv(world, "msa", "--sources", msa_sources(world),
                                launcher=launcher))["steps"] == result["steps"]
    assert len(calls(world)) == sum(launches.values())  # the rerun launched nothing


def test_msa_source_specific_only_with_explicit_order(world):
    result = msa.main(common_argv(world, "msa", "--sources", msa_sources(world), "--source_specific_only",
                                  "--order", "template,relation,caption"))
    order, steps, chosen = expected_msa(world, specific_only=True)
    assert [s["measurer"] for s in result["steps"]] == order
    assert load_split_file(result["selected_split"]) == chosen
    assert sum(1 for c in calls(world) if c["script"] == "score") == 3
    assert set(result["reliability_matrix"]["template"]) == {"template"}


@pytest.mark.parametrize("kill_at", [6, 30])
def test_msa_killed_resumes_without_repeating(world, monkeypatch, kill_at):
    argv = common_argv(world, "msa", "--sources", msa_sources(world), "--source_specific_only")
    restore = _kill_on_save(monkeypatch, kill_at)
    with pytest.raises(Killed):
        msa.main(argv)
    restore()
    result = msa.main(argv)
    assert set(launches_per_run(world).values()) == {1}
    _, _, chosen = expected_msa(world, specific_only=True)
    assert load_split_file(result["selected_split"]) == chosen


# ---------------------------------------------------------------------------------------------------- shell scripts

PUBLISHED = ["--batch_size", "64", "--lr", "0.00025", "--lr_scheduler", "cosine", "--aug_crop", "--aug_scale",
             "--aug_translate", "--imsize", "224", "--max_query_len", "77"]


def _script_env(world, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "CUDA_VISIBLE_DEVICES", "EXTRA_ARGS")}
    env.update(DATA_ROOT=str(world / "images"), SPLIT_ROOT=str(world / "splits"), OUTPUT_ROOT=str(world / "out"),
               LAUNCHER="python", NPROC="1", EVAL_FINAL="0", EPOCHS="2", **extra)
    return env


def _has_published_settings(args):
    return all(flag in args for flag in PUBLISHED) and args[args.index("--lr") + 1] == "0.00025"


@pytest.mark.parametrize("script,driver_flag", [("ssa.sh", "--verbose"), ("msa.sh", "--source_specific_only")])
def test_shell_entry_points_run_the_drivers_with_the_published_settings(world, script, driver_flag):
    extra = {"SOURCES": msa_sources(world)} if script == "msa.sh" else {}
    subprocess.run(["bash", os.path.join(ROOT, "train_and_eval_script", script), "unc", driver_flag,
                    "--min_samples", "1", "--train_script", str(world / "stub_train.py"),
                    "--score_script", str(world / "stub_score.py")],
                   env=_script_env(world, **extra), check=True, capture_output=True, timeout=120)
    name = script[:3]
    state = json.load(open(world / "out" / name / "unc" / f"{name}_state.json"))
    assert state["options"]["candidate_epochs"] == state["options"]["final_epochs"] == 2
    assert _has_published_settings(state["options"]["train_args"])
    assert state["options"]["score_args"] == "--batch_size 128"
    train_calls = [c for c in calls(world) if c["script"] == "train"]
    assert train_calls and all(_has_published_settings(c["extra"]) for c in train_calls)
    assert os.path.exists(world / "out" / name / "unc" / f"{name}_result.json")


# ---------------------------------------------------------------------------------------------------- inputs, lock

TRY_LOCK = ("import os, sys, time\nfrom curriculum.runs.lock import work_dir_lock\nwork, tag = sys.argv[1:]\n"
            "open(os.path.join(os.path.dirname(work), tag + '.ready'), 'w').close()\n"
            "while sum(f.endswith('.ready') for f in os.listdir(os.path.dirname(work))) < 4:\n    time.sleep(0.01)\n"
            "try:\n    with work_dir_lock(work):\n        print('taken', flush=True)\n        time.sleep(3)\n"
            "except ValueError as exc:\n    print(exc, flush=True)\n")
"""Four drivers reaching one work folder at once (argv: work folder, a tag)."""


def test_the_work_folder_lock_is_held_by_the_kernel_never_twice(world):
    work = world / "w"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(work), "holder"], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"up\n"
        (work / ".driver.lock").write_text("")  # as another driver reads it while the holder writes it
        with pytest.raises(InputError, match="in use by another driver"):
            with work_dir_lock(str(work)):
                pass
    finally:
        holder.kill()  # killed: the file stays, the kernel lets go of the lock
        holder.wait()
    assert (work / ".driver.lock").exists()
    # a lock file left by a dead driver, and four drivers taking it over at once: exactly one gets it
    json.dump({"pid": 999999, "host": socket.gethostname()}, open(work / ".driver.lock", "w"))
    drivers = [subprocess.Popen([sys.executable, "-c", TRY_LOCK, str(work), str(k)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True) for k in range(4)]
    outputs = [d.communicate(timeout=120)[0] for d in drivers]
    assert sorted(out.strip().startswith("taken") for out in outputs) == [False, False, False, True], outputs
    assert all("in use by another driver" in out for out in outputs if not out.startswith("taken"))
    assert not (work / ".driver.lock").exists()  # released by its holder


def test_a_work_dir_that_is_a_file_or_cannot_be_made_is_a_one_line_error(world):
    (world / "file").write_text("x")
    for work, message in ((world / "file", "is a file, not a folder"), (world / "file" / "sub", "cannot create it")):
        with pytest.raises(InputError, match=f"--work_dir {work}: {message}"):
            ssa.main(common_argv(world, work))
    out = subprocess.run([sys.executable, "-W", "ignore", "-m", "curriculum.msa",
                          *common_argv(world, "file", "--sources", "a:b")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"error: --work_dir {world / 'file'}: is a file, not a folder"]


def test_a_missing_or_unreadable_msa_source_is_named_before_any_run(world):
    (world / "text.pth").write_text("not a split file\n")
    for path, message in ((world / "none.pth", "--sources caption: {}: no such file"),
                          (world / "text.pth", "split file {} is not a readable torch.save file")):
        sources = msa_sources(world).replace(str(world / "caption.pth"), str(path))
        with pytest.raises(InputError, match=message.format(path).replace("(", r"\(").replace(")", r"\)")):
            msa.main(common_argv(world, "msa", "--sources", sources))
    assert calls(world) == []


def test_a_source_sample_training_would_skip_is_refused_before_the_measurer_trains(world):
    split = world / "splits" / "unc" / "unc_train_pseudo.pth"
    samples = torch.load(split, weights_only=True)
    samples[7] = (*samples[7][:3], "", samples[7][4])  # an empty query: skipped by training, refused by scoring
    torch.save(samples, split)
    with pytest.raises(InputError, match=r"1 of 120 samples cannot be trained on or scored, e\.g\. unc sample 7: "
                                         r"empty query"):
        ssa.main(common_argv(world, "ssa"))
    assert calls(world) == []  # no measurer wasted
    sources = msa_sources(world).replace(str(world / "caption.pth"), str(split))
    with pytest.raises(InputError, match="--sources caption: .*unc sample 7: empty query"):
        msa.main(common_argv(world, "msa", "--sources", sources))
    assert calls(world) == []
