"""Every launch mode reaches the same distributed setup (gloo on the CPU)."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "tests", "scripts", "dist_probe.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(out_dir) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}
           and not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    env["PROBE_OUT"] = str(out_dir)
    return env


def _reports(out_dir) -> list:
    names = sorted(os.listdir(out_dir))
    return [json.load(open(os.path.join(out_dir, n))) for n in names]


def _check_two_ranks(reports: list) -> None:
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world"] == 2 and r["distributed"] and r["device"] == "cpu" for r in reports)
    assert all(r["gathered"] == [0, 1] for r in reports)
    assert [r["local_rank"] for r in reports] == [0, 1]


def test_plain_process_is_single_and_not_distributed(tmp_path):
    subprocess.run([sys.executable, PROBE, "--device", "cpu"], capture_output=True, text=True,
                   env=_clean_env(tmp_path), timeout=120, check=True)
    (report,) = _reports(tmp_path)
    assert report == {"rank": 0, "world": 1, "local_rank": 0, "distributed": False, "device": "cpu",
                      "gathered": [0]}


@pytest.mark.parametrize("launcher", [
    ["-m", "torch.distributed.run"],                           # torchrun
    ["-m", "torch.distributed.launch", "--use-env"],           # launch --use_env
    ["-m", "torch.distributed.launch"],                        # legacy: passes --local-rank=N
])
def test_launchers_give_two_gloo_ranks(launcher, tmp_path):
    cmd = [sys.executable, *launcher, "--nproc_per_node=2", f"--master_port={_free_port()}", PROBE,
           "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(tmp_path), timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_two_ranks(_reports(tmp_path))


def test_slurm_environment_gives_two_ranks(tmp_path):
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = _clean_env(tmp_path)
        env.update(SLURM_JOB_ID="1", SLURM_STEP_ID="0", SLURM_PROCID=str(rank), SLURM_NTASKS="2",
                   SLURM_LOCALID=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, PROBE, "--device", "cpu"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    _check_two_ranks(_reports(tmp_path))


def test_slurm_without_master_address_says_what_to_set(tmp_path):
    env = _clean_env(tmp_path)
    env.update(SLURM_JOB_ID="1", SLURM_STEP_ID="0", SLURM_PROCID="0", SLURM_NTASKS="2", SLURM_LOCALID="0")
    out = subprocess.run([sys.executable, PROBE, "--device", "cpu"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode != 0
    assert "MASTER_ADDR" in out.stderr and "MASTER_PORT" in out.stderr
