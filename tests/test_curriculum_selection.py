"""Selecting percent(H, h) into split files, train_separate naming, merging and the select CLI."""
import json
import os

import pytest
import torch

from curriculum import select as select_cli
from curriculum.reliability import select
from curriculum.subset_files import (merge_separate_dir, prepare_split_root, separate_files, separate_name,
                                     threshold_tag, union, write_separate)
from datasets.records import load_split_file
from utils.errors import UsageError


def _five(prefix, n):
    return [(f"{prefix}_{i}.jpg", "useless placeholder", [1.0, 2.0, 3.0 + i, 4.0], f"{prefix} {i}",
             "useless placeholder") for i in range(n)]


def _jsonl(path, samples, ious):
    with open(path, "w") as fh:
        for i, (s, r) in enumerate(zip(samples, ious)):
            fh.write(json.dumps({"index": i, "image": s[0], "query": s[3], "target_xyxy": [0, 0, 1, 1],
                                 "pred_xyxy": [0, 0, 1, 1], "iou": r}) + "\n")


def test_threshold_tags_and_names():
    assert [threshold_tag(h) for h in (0.0, 0.5, 0.25, 1.0, 0.1 + 0.2, 0.7)] == ["0_0", "0_5", "0_25", "1_0", "0_3",
                                                                                  "0_7"]
    assert separate_name(1, "unc+", "template", 0.5) == "1_unc+_train_pseudo_template_0_5.pth"
    with pytest.raises(ValueError, match="source name"):
        separate_name(1, "unc", "my_source", 0.5)


def test_select_keeps_tuples_in_order_inclusive_at_h():
    samples = _five("a", 5)
    assert select(samples, [0.5, 0.49999, 0.7, 0.0, 1.0], 0.5) == [samples[0], samples[2], samples[4]]
    assert select(samples, [0.0] * 5, 0.0) == samples
    with pytest.raises(ValueError, match="5 samples but 4"):
        select(samples, [0.1] * 4, 0.5)
    with pytest.raises(ValueError, match="mixed tuple layouts"):
        union([samples, [("x.jpg", [0, 0, 1, 1], "flickr style")]])


def test_write_and_merge_separate_round_trip(tmp_path):
    a, b = _five("a", 4), _five("b", 3)
    pa, na = write_separate(str(tmp_path), 2, "unc", "relation", b, [0.9, 0.1, 0.6], 0.6)
    pb, nb = write_separate(str(tmp_path), 1, "unc", "template", a, [0.5, 0.5, 0.2, 1.0], 0.5)
    assert os.path.basename(pa) == "2_unc_train_pseudo_relation_0_6.pth" and na == 2
    assert [(k, s) for k, s, _ in separate_files(str(tmp_path), "unc")] == [(1, "template"), (2, "relation")]
    out = tmp_path / "unc" / "unc_train_pseudo.pth"
    assert merge_separate_dir(str(tmp_path), "unc", str(out)) == 5
    assert torch.load(out, weights_only=True) == [a[0], a[1], a[3], b[0], b[2]]
    write_separate(str(tmp_path), 1, "unc", "caption", a, [1.0] * 4, 0.5)
    with pytest.raises(ValueError, match="order number 1"):
        separate_files(str(tmp_path), "unc")


def test_prepare_split_root_links_other_splits(tmp_path):
    original = tmp_path / "orig"
    (original / "unc").mkdir(parents=True)
    for split in ("val", "testA", "train_pseudo"):
        torch.save(_five(split, 2), original / "unc" / f"unc_{split}.pth")
    path = prepare_split_root(str(tmp_path / "new"), "unc", str(original), "train_pseudo", _five("sel", 1))
    assert load_split_file(path) == _five("sel", 1)
    assert load_split_file(str(tmp_path / "new" / "unc" / "unc_val.pth")) == _five("val", 2)
    assert load_split_file(str(tmp_path / "new" / "unc" / "unc_testA.pth")) == _five("testA", 2)
    assert load_split_file(str(original / "unc" / "unc_train_pseudo.pth")) == _five("train_pseudo", 2)  # untouched


def test_load_split_names_the_file(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"not": "a list"}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        load_split_file(str(bad))
    mixed = tmp_path / "mixed.pth"
    torch.save(_five("a", 1) + [("x.jpg", [0, 0, 1, 1], "q")], mixed)
    with pytest.raises(ValueError, match="mixed.pth: sample 1"):
        load_split_file(str(mixed), same_layout=True)


def test_select_cli_writes_separate_files_merge_and_links(tmp_path, capsys):
    original = tmp_path / "orig"
    (original / "unc").mkdir(parents=True)
    torch.save(_five("val", 2), original / "unc" / "unc_val.pth")
    a, b = _five("a", 4), _five("b", 4)
    torch.save(a, tmp_path / "a.pth")
    torch.save(b, tmp_path / "b.pth")
    _jsonl(tmp_path / "a.jsonl", a, [0.1, 0.5, 0.6, 0.2])
    _jsonl(tmp_path / "b.jsonl", b, [0.9, 0.39999999999, 0.0, 0.4])
    out = tmp_path / "out"
    report = select_cli.main(["--dataset", "unc", "--out_dir", str(out),
                              "--source", "template", str(tmp_path / "a.pth"), str(tmp_path / "a.jsonl"), "0.5",
                              "--source", "relation", str(tmp_path / "b.pth"), str(tmp_path / "b.jsonl"), "0.4",
                              "--link_splits_from", str(original)])
    sep = out / "unc" / "train_separate"
    assert sorted(os.listdir(sep)) == ["1_unc_train_pseudo_template_0_5.pth", "2_unc_train_pseudo_relation_0_4.pth"]
    assert torch.load(out / "unc" / "unc_train_pseudo.pth", weights_only=True) == [a[1], a[2], b[0], b[1], b[3]]
    assert report["merged"]["samples"] == 5 and report["linked"] == ["val"]
    assert json.loads(capsys.readouterr().out)["sources"][0]["selected"] == 2
    merged_again = select_cli.main(["--dataset", "unc", "--out_dir", str(tmp_path / "out2"), "--merge_dir", str(sep)])
    assert merged_again["merged"]["samples"] == 5
    with pytest.raises(UsageError, match="threshold 1.5 must be in"):
        select_cli.main(["--dataset", "unc", "--out_dir", str(out), "--source", "t", str(tmp_path / "a.pth"),
                         str(tmp_path / "a.jsonl"), "1.5"])
