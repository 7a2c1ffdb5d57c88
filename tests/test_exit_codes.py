"""The exit-status convention over every entry point, each run as a command: 2 for a bad command line, 1 for bad
input, 130 / 143 for SIGINT / SIGTERM, with one line on stderr (``error: ...`` for the project's own errors)."""
import importlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers_world import default_sigint
from utils.cli import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/no/such/file.json"
PSEUDO = "pseudo_label_generation_module"


def _command(entry: str) -> list:
    if entry.endswith(".py"):
        return [sys.executable, "-W", "ignore", os.path.join(ROOT, entry)]
    return [sys.executable, "-W", "ignore", "-m", entry]


def _cases(tmp: str) -> list:
    """(entry point, flags, expected status, expected start of stderr's last line or None)."""
    out, run = os.path.join(tmp, "out"), ["--device", "cpu", "--output_dir", os.path.join(tmp, "run")]
    labels = os.path.join(tmp, "labels.pth")  # a file to write (``out`` becomes a folder: the drivers' work_dir)
    return [
        ("train_clip_vg.py", [*run, "--max_steps", "0"], 2, "error: --max_steps 0: must be at least 1"),
        ("train_clip_vg.py", [*run, "--resume", MISSING], 1, f"error: --resume {MISSING}: no such checkpoint file"),
        ("eval.py", run, 2, "error: --eval_model is required"),
        ("eval.py", [*run, "--eval_model", tmp], 1, f"error: --eval_model {tmp}: is a directory"),
        ("eval_for_reliability_distribution.py", [*run, "--no_such_flag"], 2, None),
        ("eval_for_reliability_distribution.py", [*run, "--eval_model", MISSING], 1,
         f"error: --eval_model {MISSING}: no such checkpoint file"),
        ("inference.py", ["--device", "cpu"], 2, "error: give --image and --query"),
        ("inference.py", ["--image", MISSING, "--query", "a dog", "--eval_model", MISSING], 1,
         f"error: --image {MISSING}: no such image file"),
        ("datasets.check", ["--dataset", "unc", "--prompt", "no placeholder"], 2, "error: --prompt 'no placeholder'"),
        ("datasets.check", ["--dataset", "unc", "--data_root", tmp, "--split_root", tmp], 1, None),
        ("curriculum.ssa", ["--no_such_flag"], 2, None),
        ("curriculum.ssa", ["--dataset", "unc", "--data_root", tmp, "--split_root", tmp, "--work_dir", out], 1,
         f"error: --split_root {tmp}: no folder unc/"),
        ("curriculum.msa", ["--no_such_flag"], 2, None),
        ("curriculum.msa", ["--dataset", "unc", "--data_root", tmp, "--split_root", tmp, "--work_dir", out,
                            "--sources", "a"], 1, None),
        ("curriculum.select", ["--no_such_flag"], 2, None),
        ("curriculum.select", ["--dataset", "unc", "--out_dir", out, "--merge_dir", MISSING], 1, "error: "),
        (f"{PSEUDO}.caption", ["--dataset", "unc", "--output", labels], 2, None),
        (f"{PSEUDO}.caption", ["--dataset", "unc", "--output", labels, "--captions", MISSING, "--detections", MISSING],
         1, f"error: {MISSING}: file not found"),
        (f"{PSEUDO}.convert", ["no-such-format"], 2, None),
        (f"{PSEUDO}.convert", ["coco-captions", "--results", MISSING, "--annotations", MISSING, "--output", labels], 1,
         f"error: {MISSING}: file not found"),
        (f"{PSEUDO}.merge", ["--dataset", "unc", "--inputs", MISSING], 2, "error: --output is required with --inputs"),
        (f"{PSEUDO}.merge", ["--dataset", "unc", "--folder", MISSING], 1, f"error: {MISSING}: folder not found"),
        (f"{PSEUDO}.relation", ["--dataset", "unc", "--output", labels, "--scene_graphs", MISSING, "--per_image", "0"],
         2, "error: RelationConfig.per_image must be >= 1"),
        (f"{PSEUDO}.relation", ["--dataset", "unc", "--output", labels, "--scene_graphs", MISSING], 1,
         f"error: {MISSING}: file not found"),
        (f"{PSEUDO}.stats", ["--dataset", "unc"], 2, None),
        (f"{PSEUDO}.stats", [MISSING, "--dataset", "unc"], 1, f"error: split file {MISSING} not found"),
        (f"{PSEUDO}.template", ["--dataset", "unc", "--output", labels], 2, None),
        (f"{PSEUDO}.template", ["--dataset", "unc", "--output", labels, "--detections", MISSING], 1,
         f"error: {MISSING}: file not found"),
    ]


def _module(entry: str):
    return importlib.import_module(entry[:-3] if entry.endswith(".py") else entry)


def _exit_status(entry: str, flags: list, capsys) -> tuple:
    """(exit status, stdout, stderr) of ``entry`` run as its command does: through ``run_cli`` (a ``SystemExit``
    with a message exits 1, as Python does)."""
    main = _module(entry).main
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: main(flags))
    code = info.value.code
    out, err = capsys.readouterr()
    if isinstance(code, str):
        code, err = 1, err + code + "\n"
    return code, out, err


def test_every_entry_point_exits_2_for_a_bad_command_line_and_1_for_bad_input(tmp_path, capsys):
    failures = []
    for entry, flags, status, line in _cases(str(tmp_path)):
        code, out, err = _exit_status(entry, flags, capsys)
        last = (err.strip().splitlines() or [""])[-1]
        ok = code == status and "Traceback" not in err
        if ok and line is not None:
            ok = last.startswith(line)
        elif ok and status == 2:
            ok = ": error: " in last  # argparse's own line
        elif ok:
            ok = bool(last) or "PROBLEMS" in out  # the checker reports bad input on stdout
        if not ok:
            failures.append(f"{entry} {flags}: status {code} (expected {status}); stderr: {err[-600:]}")
    assert not failures, "\n".join(failures)


def test_every_entry_point_ends_through_run_cli():
    """Run as a command, each entry point goes through ``run_cli``."""
    for entry in sorted({case[0] for case in _cases("/tmp")}):
        path = entry if entry.endswith(".py") else entry.replace(".", "/") + ".py"
        with open(os.path.join(ROOT, path)) as fh:
            assert fh.read().rstrip().endswith('if __name__ == "__main__":\n    run_cli(main)'), path


def test_bad_input_as_a_process(tmp_path):
    """The same convention end to end for one entry point: the process exits 1 with one line on stderr."""
    out = subprocess.run([*_command("eval.py"), "--device", "cpu", "--output_dir", str(tmp_path), "--eval_model",
                          MISSING], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"error: --eval_model {MISSING}: no such checkpoint file"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGINT, 130, "[rank0]: stopped by SIGINT (Ctrl-C)"),
    (signal.SIGTERM, 143, "[rank0]: stopped by SIGTERM"),
])
def test_a_signal_stops_training_with_its_exit_status_and_one_line(tmp_path, signum, status, line):
    """Training as rank 0 of 2 waits for its peer (which never comes); the signal stops it at once."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    proc = subprocess.Popen([*_command("train_clip_vg.py"), "--device", "cpu", "--output_dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err[-2000:]
    assert err.strip().splitlines()[-1] == line
