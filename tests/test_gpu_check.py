"""benchmarks/gpu_check.sh on the CPU (DEVICE=cpu: tiny CLIP, 64 px, 2-process gloo): every check of the GPU
check runs up to the device and the summary is one well-formed JSON object. The two ``--compile`` training checks
are left out here (``--no_compile``: inductor's C++ compilation takes minutes on a 2-core CPU); they run the same
train_clip_vg.py command with ``--compile`` added."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = ["train_fp32", "train_bf16", "eval_fp32", "reliability_fp32", "inference_fp32", "eval_bf16",
            "reliability_bf16", "inference_bf16", "ddp_train", "ddp_eval", "benchmark_model_b4", "benchmark_model_b8",
            "benchmark_e2e"]


def test_cpu_dry_run_of_the_gpu_check_passes_every_check(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "WORK_DIR": str(tmp_path), "PYTHON": sys.executable}
    script = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
    done = subprocess.run(["bash", script, "--budget_s", "3000", "--check_timeout_s", "1200", "--no_compile"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout[-2000:]
    summary = json.loads(lines[0])
    assert done.returncode == 0 and summary["ok"] and summary["failed"] == [], (summary["failed"], done.stderr[-2000:])
    assert list(summary["checks"]) == EXPECTED
    assert (summary["device"], summary["tiny"], summary["model"]) == ("cpu", True, "random:tiny")
    checks = summary["checks"]
    assert checks["eval_bf16"]["result"]["samples"] > 0 and checks["inference_bf16"]["result"]["box_xyxy"]
    for name in ("benchmark_model_b4", "benchmark_model_b8", "benchmark_e2e"):
        assert checks[name]["result"]["train_samples_per_s"] > 0, name
    assert summary["goals"]["train_samples_per_s_per_gpu"]["measured"] > 0
    assert os.path.exists(checks["train_fp32"]["log"]) and "gpu_check: device cpu" in done.stderr


def test_cuda_without_a_gpu_is_named(monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "device_count", lambda: 0)
    with pytest.raises(SystemExit, match="no CUDA device is visible"):
        gpu_check.main(["--device", "cuda", "--tiny"])
