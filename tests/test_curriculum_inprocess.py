"""The runner's in-process launcher with the real train_clip_vg.py on a tiny synthetic world (tiny CLIP, CPU): the
same run as a subprocess, reuse without calling ``main`` again, and a command-line error as a ``RunFailedError``."""
import json
import os
import subprocess
import sys

import pytest
import torch

import curriculum.runs.processes as processes
from curriculum.runs.cache import RUN_CACHE_INDEX
from curriculum.runs.launchers import REPO_ROOT, RunFailedError, TrainLauncher
from utils.run_setup import logged_epochs
from helpers_world import make_world

RESULT_KEYS = ("val_accu", "val_miou", "best_epoch", "epochs", "epochs_logged")
EPOCH_KEYS = ("epoch", "train_loss", "train_l1", "train_giou", "lr", "val_accu", "val_miou", "best_val_accu")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = make_world(str(tmp_path_factory.mktemp("world")))
    world["samples"] = torch.load(os.path.join(world["splits"], "synthetic", "synthetic_train_pseudo.pth"),
                                  weights_only=True)
    world["args"] = ["--model", world["clip"], "--imsize", "64", "--device", "cpu", "--num_workers", "0",
                     "--vl_dropout", "0", "--lr", "1e-3", "--batch_size", "8"]
    return world


def train(world, spec, run_dir, *extra):
    launcher = TrainLauncher(spec, common_args=[*world["args"], *extra], echo="none")
    return launcher.run(str(run_dir), "synthetic", world["data"], world["splits"], world["samples"], epochs=2)


def epoch_rows(run):
    """The per-epoch losses, learning rate and accuracies of a training run's log.txt (no timings)."""
    return [{k: row[k] for k in EPOCH_KEYS} for row in logged_epochs(run["result"]["log_txt"])]


def test_inprocess_training_run_matches_the_subprocess_run_and_is_reused(world, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    sub = train(world, "python", tmp_path / "sub")
    inproc = train(world, "inprocess", tmp_path / "inproc")
    assert torch.get_num_threads() == threads
    assert inproc["command"][0] == "inprocess" and inproc["command"][1:2] == sub["command"][1:2]
    assert inproc["pid"] == os.getpid() != sub["pid"] and not inproc["reused"]
    # seeded: the same losses and accuracies, up to float rounding (the two processes may run different thread
    # counts, so reductions may add in another order)
    assert {k: inproc["result"][k] for k in RESULT_KEYS} == {k: pytest.approx(sub["result"][k], rel=1e-5)
                                                             for k in RESULT_KEYS}
    assert len(epoch_rows(sub)) == 2
    assert epoch_rows(inproc) == [{k: pytest.approx(v, rel=1e-5) for k, v in row.items()} for row in epoch_rows(sub)]
    for run in (sub, inproc):  # the script's own output, after the attempt header
        log = open(run["log"]).read()
        assert log.startswith("=== ") and "| epoch 1: loss" in log

    def not_again(path):
        raise AssertionError(f"{path} was imported and run again")

    monkeypatch.setattr(processes, "_load_script", not_again)
    again = train(world, "inprocess", tmp_path / "inproc")
    assert again["reused"] and again["result"] == inproc["result"]
    assert json.load(open(tmp_path / "inproc" / "run.json"))["attempts"] == 1


def test_inprocess_command_line_error_is_a_run_failure(world, tmp_path):
    streams = (sys.stdout, sys.stderr)
    with pytest.raises(RunFailedError) as info:
        train(world, "inprocess", tmp_path / "bad", "--no_such_flag")
    assert (sys.stdout, sys.stderr) == streams
    message, log = str(info.value), str(tmp_path / "bad" / "launch.log")
    assert "command failed with exit code 2" in message and f"full log: {log}" in message
    assert "error: unrecognized arguments: --no_such_flag" in message
    assert "unrecognized arguments: --no_such_flag" in open(log).read()


def test_run_cache_shares_a_run_between_inprocess_and_interpreter_launches_only(world, tmp_path):
    cache = str(tmp_path / "cache")

    def run(spec, name, **kwargs):
        launcher = TrainLauncher(spec, common_args=world["args"], echo="none", run_cache=cache, **kwargs)
        return launcher.run(str(tmp_path / name), "synthetic", world["data"], world["splits"], world["samples"],
                            epochs=1)

    first = run("inprocess", "a")
    second = run("python", "b", env={"OMP_NUM_THREADS": "1"})
    assert second["reused_from"] == first["run_dir"] and not os.path.exists(tmp_path / "b" / "output")
    # several processes train differently (each its own batch): no sharing with a one-process run
    command = first["command"][1:]
    torchrun = TrainLauncher("torchrun --nproc_per_node=2", common_args=world["args"])
    assert torchrun._identity([*torchrun.prefix, *command]) != TrainLauncher("python")._identity(
        [sys.executable, *command])


def test_launcher_env_reaches_launched_processes_and_is_refused_in_process():
    launcher = TrainLauncher("python", env={"CLIPVG_TEST_VAR": "42"})
    lines = []
    status = launcher._spawn([sys.executable, "-c", "import os; print(os.environ['CLIPVG_TEST_VAR'])"],
                             lines.append, lambda pid: None)
    assert status == 0 and lines == [b"42\n"]
    with pytest.raises(ValueError, match="inprocess"):
        TrainLauncher("inprocess", env={"OMP_NUM_THREADS": "1"})


def test_run_cache_index_keeps_every_entry_when_processes_add_at_once(tmp_path):
    """Drivers side by side (the demo's SSA final beside MSA's search) add to one run cache index concurrently."""
    code = ("import os, sys, time\nfrom curriculum.runs.cache import RunCache\nfolder, tag = sys.argv[1:]\n"
            "open(os.path.join(folder, tag + '.ready'), 'w').close()\n"
            "while sum(f.endswith('.ready') for f in os.listdir(folder)) < 3:\n    time.sleep(0.01)\n"
            "cache = RunCache(os.path.join(folder, 'cache'))\n"
            "for i in range(100):\n    cache.add(f'{tag}-{i}', f'/runs/{tag}/{i}')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag], cwd=REPO_ROOT)
             for tag in ("ssa", "msa", "other")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    index = json.loads((tmp_path / "cache" / RUN_CACHE_INDEX).read_text())
    assert len(index) == 300
    assert index["msa-99"] == "/runs/msa/99" and index["ssa-0"] == "/runs/ssa/0"
