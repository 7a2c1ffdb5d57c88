"""The data checker: report contents and exit codes."""
import os
import subprocess
import sys

import pytest

from datasets.check import check_dataset, main
from datasets.records import IMAGE_DIRS
from test_data import ROWS, make_dataset, sample, write_split
from utils.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(tmp_path, *extra):
    return main(["--dataset", "unc", "--data_root", os.path.join(tmp_path, "images"),
                 "--split_root", os.path.join(tmp_path, "splits"), *extra])


def test_clean_dataset_reports_counts_and_exits_0(tmp_path, capsys):
    make_dataset(tmp_path, "unc", {"train": ROWS + [("a.jpg", (1, 1, 5, 5), "again")], "val": ROWS})
    report = check_dataset("unc", os.path.join(tmp_path, "images"), os.path.join(tmp_path, "splits"))
    assert report["ok"] and report["problems"] == []
    train = report["splits"]["train"]
    assert (train["samples"], train["distinct_images"], train["missing_images"], train["bad_samples"]) == (3, 2, 0, 0)
    assert report["absent"] == ["testA", "testB", "train_pseudo"]  # reported, not a problem
    assert "trainval" not in report["splits"]  # composed of train + val, checked through them
    assert cli(tmp_path) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["split", "samples", "images", "missing", "bad", "long", "status"]
    assert out.splitlines()[2].split() == ["train", "3", "2", "0", "0", "0", "ok"]
    assert "absent splits: testA, testB, train_pseudo" in out
    assert out.rstrip().endswith("OK")


def test_missing_images_and_bad_samples_are_listed_and_exit_1(tmp_path, capsys):
    data_root, split_root = make_dataset(tmp_path, "unc", {"val": ROWS})
    os.remove(os.path.join(data_root, IMAGE_DIRS["unc"], "b.png"))
    write_split(split_root, "unc", "train", [sample("unc", *ROWS[0]), ("a.jpg", "x", [0, 0, 0, 5], "q", "y"),
                                             ("oops",), sample("unc", "gone.jpg", (0, 0, 5, 5), "q")])
    report = check_dataset("unc", data_root, split_root)
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert (train["bad_samples"], train["missing_images"]) == (2, 1)
    assert train["bad_examples"][0].startswith("unc sample 1: box") and "sample 2" in train["bad_examples"][1]
    assert train["missing_examples"] == ["gone.jpg (sample 3)"]
    assert val["missing_examples"] == ["b.png (sample 1)"] and val["status"] == "problems"
    assert not report["ok"] and len(report["problems"]) == 3
    assert cli(tmp_path) == 1
    out = capsys.readouterr().out
    assert "train: missing image gone.jpg (sample 3)" in out and "PROBLEMS (3)" in out


def test_absent_split_is_a_problem_only_when_asked_for(tmp_path):
    make_dataset(tmp_path, "unc", {"val": ROWS})
    assert cli(tmp_path, "--splits", "val") == 0
    assert cli(tmp_path, "--splits", "val,testB") == 1
    report = check_dataset("unc", os.path.join(tmp_path, "images"), os.path.join(tmp_path, "splits"), ["trainval"])
    assert report["splits"]["trainval"]["status"] == "absent" and not report["ok"]


def test_no_split_file_at_all_is_a_problem(tmp_path):
    report = check_dataset("gref", str(tmp_path), str(tmp_path))
    assert not report["ok"] and "no split file of gref" in report["problems"][-1]


def test_unreadable_images_only_with_verify(tmp_path):
    data_root, _ = make_dataset(tmp_path, "unc", {"val": ROWS})
    with open(os.path.join(data_root, IMAGE_DIRS["unc"], "a.jpg"), "wb") as f:
        f.write(b"\xff\xd8 truncated garbage")
    assert cli(tmp_path) == 0
    report = check_dataset("unc", data_root, os.path.join(tmp_path, "splits"), verify_images=True)
    assert report["splits"]["val"]["unreadable_images"] == 1 and not report["ok"]
    assert cli(tmp_path, "--verify_images") == 1


def test_long_queries_are_a_warning(tmp_path, capsys):
    make_dataset(tmp_path, "unc", {"val": ROWS + [("c.jpg", (1, 1, 9, 9), "red " * 90)]})
    report = check_dataset("unc", os.path.join(tmp_path, "images"), os.path.join(tmp_path, "splits"))
    assert report["splits"]["val"]["long_queries"] == 1 and report["splits"]["val"]["first_long_query"] == 2
    assert report["ok"]
    assert cli(tmp_path) == 0 and "1 queries truncated" in capsys.readouterr().out


def test_unreadable_split_file_is_a_problem(tmp_path):
    make_dataset(tmp_path, "unc", {"val": ROWS})
    with open(os.path.join(tmp_path, "splits", "unc", "unc_train.pth"), "wb") as f:
        f.write(b"garbage")
    report = check_dataset("unc", os.path.join(tmp_path, "images"), os.path.join(tmp_path, "splits"))
    assert report["splits"]["train"]["status"] == "unreadable" and not report["ok"]


def test_unknown_split_is_refused(tmp_path, capsys):
    with pytest.raises(UsageError, match="valid splits"):
        cli(tmp_path, "--splits", "test")
    with pytest.raises(UsageError, match="valid datasets"):
        check_dataset("coco", str(tmp_path), str(tmp_path))


def test_module_entry_point(tmp_path):
    make_dataset(tmp_path, "unc", {"val": ROWS})
    run = subprocess.run([sys.executable, "-m", "datasets.check", "--dataset", "unc", "--data_root",
                          os.path.join(tmp_path, "images"), "--split_root", os.path.join(tmp_path, "splits"),
                          "--json"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert '"ok": true' in run.stdout
