"""The evaluation report: metrics against hand-computed numbers, the spatial-word rule, the report files, eval.py
--report on 1 and 2 processes (gloo), and the reliability script's gallery."""
import base64
import json
import os
import re

import pytest
from PIL import Image

import eval as eval_script
import eval_for_reliability_distribution as reliability_script
from helpers_world import common_args, torchrun, world_with_checkpoint
from utils.report import GalleryItem, extremes, grounding_metrics, is_spatial, length_bucket, write_report

IOUS = [0.95, 0.85, 0.75, 0.65, 0.55, 0.5, 0.45, 0.0]
QUERIES = ["man",                                     # 1 word
           "the left dog",                            # 3, spatial
           "red car next to the tree",                # 6, spatial (phrase)
           "leftover pizza slice",                    # 3, not spatial (whole words only)
           "a big brown dog that sits on the grass",  # 9
           "Top-Right corner",                        # 3 ("top", "right"), spatial
           "the next one please",                     # 4, not spatial ("next" alone)
           "woman"]                                   # 1


def test_metrics_match_hand_computed_numbers():
    m = grounding_metrics(IOUS, QUERIES)
    assert m["samples"] == 8
    # IoU >= t: 0.5 -> 6 of 8 (0.5 itself counts), 0.6 -> 4, 0.7 -> 3, 0.8 -> 2, 0.9 -> 1
    assert [m[f"accuracy@{t}"] for t in ("0.5", "0.6", "0.7", "0.8", "0.9")] == [6 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    assert m["miou"] == pytest.approx(4.7 / 8)
    # lengths: man 1, left dog 3, next-to 6, leftover 3, brown dog 9, top-right 3, next one 4, woman 1
    assert m["by_length"] == {"1-2": {"samples": 2, "accuracy@0.5": 0.5},      # 0.95, 0.0
                              "3-4": {"samples": 4, "accuracy@0.5": 0.75},     # 0.85, 0.65, 0.5, 0.45
                              "5-7": {"samples": 1, "accuracy@0.5": 1.0},      # 0.75
                              "8+": {"samples": 1, "accuracy@0.5": 1.0}}       # 0.55
    assert m["by_spatial"] == {"spatial": {"samples": 3, "accuracy@0.5": 1.0},  # 0.85, 0.75, 0.5
                               "non-spatial": {"samples": 5, "accuracy@0.5": 0.6}}


@pytest.mark.parametrize("query, spatial", [
    ("the guy on the left", True), ("LEFTMOST bottle", True), ("man in front of the car", True),
    ("cup close to the plate", True), ("cat under the table", True), ("centre", True), ("the man's hat", False),
    ("topping on the pizza", False), ("close up of a dog", False), ("bright light", False), ("", False)])
def test_spatial_rule_uses_whole_words_and_phrases(query, spatial):
    assert is_spatial(query) is spatial


def test_length_buckets_count_words():
    assert [length_bucket(q) for q in ("", "a b", "a b c", "a-b c d", "a b c d e f g", "a b c d e f g h")] == \
        ["1-2", "1-2", "3-4", "3-4", "5-7", "8+"]


def test_report_files_are_self_contained_and_rank_the_gallery(tmp_path):
    image = str(tmp_path / "img.png")
    Image.new("RGB", (40, 30), (90, 90, 90)).save(image)
    items = [GalleryItem(i, image, q, [2, 2, 20, 20], [5, 5, 30, 25], v) for i, (q, v) in enumerate(zip(QUERIES, IOUS))]
    worst, best = extremes(items, 3)
    assert [it.index for it in worst] == [7, 6, 5] and [it.index for it in best] == [0, 1, 2]
    paths = write_report(str(tmp_path / "r"), "title <x>", [("T", ["a"], [["1"]])], IOUS, "IoU",
                         [("Worst", worst), ("Best", best)])
    page = open(paths["html"]).read()
    assert "title &lt;x&gt;" in page and "leftover pizza slice" not in page and "&quot;woman&quot;" in page
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 7 and all(s.startswith("data:image/png;base64,") for s in sources)  # histogram + 6
    assert base64.b64decode(sources[1].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    md = open(paths["md"]).read()
    linked = re.findall(r"\]\((report_files/[^)]+)\)", md)
    assert len(linked) == 7 and all(os.path.isfile(tmp_path / "r" / p) for p in linked)
    assert json.load(open(paths["json"]))["galleries"]["Worst"][0]["index"] == 7


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_with_checkpoint(str(tmp_path_factory.mktemp("report")), n_train_pseudo=8, n_val=7, seed=3)


def _numbers(stats, prefix=""):
    """Every number of a (nested) result, flattened to {"a.b": value}, timings left out."""
    flat = {}
    for k, v in stats.items():
        if isinstance(v, dict):
            flat.update(_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and "seconds" not in k and "per_s" not in k:
            flat[prefix + k] = v
    return flat


def test_eval_report_is_the_same_on_one_and_two_processes(world, tmp_path):
    flags = ["--eval_model", world["ckpt"], "--eval_set", "val", "--batch_size", "2"]
    one = eval_script.main(common_args(world, tmp_path / "e1", *flags, "--report", str(tmp_path / "r1"),
                                       "--save_predictions", str(tmp_path / "p1.jsonl")))
    rows = [json.loads(line) for line in open(tmp_path / "p1.jsonl")]
    ious = [r["iou"] for r in rows]
    expected = grounding_metrics(ious, [r["query"] for r in rows])
    assert one["samples"] == 7 and one["val_set_accuracy"] == pytest.approx(expected["accuracy@0.5"])
    assert one["val_set_accuracy@0.7"] == pytest.approx(expected["accuracy@0.7"])
    assert one["val_set_by_length"] == expected["by_length"] and one["val_set_by_spatial"] == expected["by_spatial"]
    out = torchrun("eval.py", common_args(world, tmp_path / "e2", *flags, "--report", str(tmp_path / "r2")))
    two = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert _numbers(two) == pytest.approx(_numbers(one))
    reports = [json.load(open(tmp_path / r / "report.json")) for r in ("r1", "r2")]
    assert _numbers(reports[0]["metrics"]) == pytest.approx(_numbers(reports[1]["metrics"]))
    assert [[g["index"] for g in v] for v in reports[0]["galleries"].values()] == \
        [[g["index"] for g in v] for v in reports[1]["galleries"].values()]
    worst = reports[0]["galleries"]["Worst 7 predictions (lowest IoU)"]
    assert [g["score"] for g in worst] == sorted(ious)
    assert "Acc@0.5 by spatial words" in open(tmp_path / "r1" / "report.md").read()


def test_reliability_script_shows_least_and_most_reliable_labels(world, tmp_path):
    summary = reliability_script.main(common_args(world, tmp_path / "rel", "--eval_model", world["ckpt"],
                                                  "--report", str(tmp_path / "rel")))
    assert summary["report"] == str(tmp_path / "rel" / "report.html")
    report = json.load(open(tmp_path / "rel" / "report.json"))
    least = report["galleries"]["Least reliable 8 pseudo labels (what the curriculum drops first)"]
    rows = [json.loads(line) for line in open(tmp_path / "rel" / "synthetic_train_pseudo_reliability.jsonl")]
    assert [g["index"] for g in least] == [r["index"] for r in sorted(rows, key=lambda r: (r["iou"], r["index"]))]
    assert "pseudo label" in open(tmp_path / "rel" / "report.html").read()
