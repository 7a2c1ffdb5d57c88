"""Failures under launchers: SLURM without srun, bounded rendezvous, a failing rank, a rank's non-finite loss, and
the training loss averaged over ranks (2 gloo ranks on the CPU)."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

from helpers_world import default_sigint
from test_distributed_launch import PROBE, ROOT, _clean_env, _free_port, _reports

FAILURES = os.path.join(ROOT, "tests", "scripts", "dist_failures.py")


def _torchrun(mode: str, out_dir) -> tuple:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           FAILURES, mode, "--device", "cpu"]
    tic = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(out_dir), timeout=240)
    return out, time.monotonic() - tic


def _lone_rank_env(tmp_path, timeout_s: str) -> dict:
    env = _clean_env(tmp_path)
    env.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               CLIPVG_RENDEZVOUS_TIMEOUT=timeout_s)
    return env


def test_plain_command_in_a_slurm_batch_script_runs_as_one_process(tmp_path):
    """sbatch's variables without an srun step (no SLURM_STEP_ID): one process, said on stderr, no waiting."""
    env = _clean_env(tmp_path)
    env.update(SLURM_JOB_ID="1", SLURM_NTASKS="2", SLURM_PROCID="0", SLURM_LOCALID="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))
    out = subprocess.run([sys.executable, PROBE, "--device", "cpu"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "not an srun step: running as one process" in out.stderr
    (report,) = _reports(tmp_path)
    assert report["world"] == 1 and not report["distributed"]


def test_rendezvous_gives_up_after_its_timeout_and_says_what_it_waited_for(tmp_path):
    env = _lone_rank_env(tmp_path, "3")
    tic = time.monotonic()
    out = subprocess.run([sys.executable, FAILURES, "input_error", "--device", "cpu"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert time.monotonic() - tic < 60
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("[rank0]: error: rank 0 of 2: no rendezvous with the other ranks at MASTER_ADDR:MASTER_PORT")
    assert "within 3 s (CLIPVG_RENDEZVOUS_TIMEOUT)" in last and "Traceback" not in out.stderr


def test_ctrl_c_stops_a_rank_waiting_for_the_others(tmp_path):
    env = _lone_rank_env(tmp_path, "600")
    proc = subprocess.Popen([sys.executable, FAILURES, "input_error", "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # rank 0 listens on MASTER_PORT once it waits for the others
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(env["MASTER_PORT"]))) == 0:
                break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "[rank0]: stopped by SIGINT (Ctrl-C)"


def test_a_failing_rank_is_reported_with_its_rank_and_blamed_by_torchrun(tmp_path):
    """Rank 1 raises a one-line error while rank 0 waits in a barrier: the job ends at once, rank 1's line is on
    stderr, and torchrun's summary names rank 1 as the root cause."""
    out, seconds = _torchrun("input_error", tmp_path)
    assert out.returncode != 0 and seconds < 90
    assert "[rank1]: error: samples.pth: sample 7 has no query" in out.stderr.splitlines()
    root = out.stderr.split("Root Cause", 1)[1]
    assert "rank      : 1 (local_rank: 1)" in root and "InputError: samples.pth: sample 7 has no query" in root


def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_the_same_message(tmp_path):
    out, seconds = _torchrun("nan", tmp_path)
    assert out.returncode != 0 and seconds < 90
    message = "non-finite loss at epoch 0, step 2; batch sample indices: rank 1: [104, 105]"
    for rank in (0, 1):  # (the first rank to fail says "error: ...", the other "stopping: rank N failed first")
        assert re.search(rf"\[rank{rank}\]: [^\n]*{re.escape(message)}", out.stderr), out.stderr[-3000:]


def test_train_loss_is_averaged_over_ranks(tmp_path):
    out, _ = _torchrun("loss_mean", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    reports = _reports(tmp_path)
    own = [r["own_loss"] for r in reports]
    assert abs(own[0] - own[1]) > 1e-3  # the ranks' data differ
    for r in reports:
        assert abs(r["logged_loss"] - sum(own) / 2) < 1e-6
