"""Reliability arithmetic (histogram bins, percent(H, h), official subsets) and the scoring outputs."""
import json
import os

import numpy as np
import pytest
import torch

from curriculum.reliability import (load_reliabilities, official_subset_masks, percent, percent_indices,
                                    reliability_histogram, summary_stats, write_official_subsets,
                                    write_scoring_outputs)


def test_histogram_bins_are_left_open_right_closed_and_zero_is_separate():
    values = [0.0, 0.0, 1e-9, 0.001, 0.0010001, 0.5, 0.3, 0.1 + 0.2, 0.999, 1.0]
    counts = reliability_histogram(values)
    assert counts.shape == (1000,) and counts.dtype == np.int64
    assert counts.sum() == len(values) - 2  # the two exact zeros are in no bin
    assert counts[0] == 2  # 1e-9 and 0.001 both lie in (0, 0.001]
    assert counts[1] == 1  # 0.0010001 in (0.001, 0.002]
    assert counts[499] == 1  # 0.5 in (0.499, 0.5], not in (0.5, 0.501]
    assert counts[299] == 2  # 0.3 and 0.1 + 0.2 (= 0.30000000000000004) both in (0.299, 0.3]
    assert counts[998] == 1 and counts[999] == 1  # 0.999 and 1.0
    assert summary_stats(values)["count_zero"] == 2


def test_histogram_other_bin_counts_and_bad_values():
    assert reliability_histogram([0.25, 0.5, 0.75, 1.0], bins=4).tolist() == [1, 1, 1, 1]
    assert reliability_histogram([0.2500001], bins=4).tolist() == [0, 1, 0, 0]
    assert reliability_histogram([1.0 + 1e-9, -1e-9], bins=2).tolist() == [0, 1]  # rounding noise is clipped
    with pytest.raises(ValueError, match="sample 2"):
        reliability_histogram([0.1, 0.2, 1.5])
    with pytest.raises(ValueError, match="sample 0"):
        reliability_histogram([float("nan")])


@pytest.mark.parametrize("h", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_percent_is_inclusive_at_h_as_an_exact_decimal(h):
    just_below = h - 1e-7
    float_noise = h - 1e-12  # e.g. 0.29999999999999993 for 0.3
    values = np.array([0.0, just_below, float_noise, h, 1.0])
    mask = percent(values, h)
    expected = [h == 0.0, h == 0.0, True, True, True]
    assert mask.tolist() == expected
    assert percent_indices(values, h).tolist() == [i for i, e in enumerate(expected) if e]


def test_percent_of_arithmetic_thresholds_and_validation():
    assert percent([0.3], 0.1 + 0.2).tolist() == [True]
    assert percent([0.7], 1.0 - 0.3).tolist() == [True]
    assert percent([0.0, 1.0], 1.0).tolist() == [False, True]
    with pytest.raises(ValueError, match="threshold"):
        percent([0.5], 1.2)


def test_summary_stats():
    values = [0.0, 0.25, 0.5, 0.75, 1.0]
    stats = summary_stats(values)
    assert stats["n"] == 5 and stats["mean"] == pytest.approx(0.5)
    assert stats["quantiles"]["0.5"] == pytest.approx(0.5)
    assert stats["quantiles"]["0.1"] == pytest.approx(0.1)
    assert stats["share_above_0_5"] == pytest.approx(0.4)
    assert stats["share_at_least_0_5"] == pytest.approx(0.6)
    assert stats["count_zero"] == 1 and stats["count_one"] == 1
    with pytest.raises(ValueError):
        summary_stats([])


def test_official_subset_thresholds():
    values = [0.0, 0.1, 0.10000001, 0.39999, 0.4, 0.95, 1.0]
    masks = official_subset_masks(values)
    assert masks["refine_0_0"].tolist() == [False, True, True, True, True, True, True]
    assert masks["refine_0_1"].tolist() == [False, False, True, True, True, True, True]  # strictly > 0.1
    assert masks["refine_0_4"].tolist() == [False, False, False, False, False, True, True]
    assert masks["refine_0_9"].tolist() == [False] * 5 + [True, True]
    assert masks["refine_1_0"].tolist() == [False] * 6 + [True]
    assert masks["bad_label_0_0"].tolist() == [True] + [False] * 6
    assert masks["bad_label_0_4"].tolist() == [True, True, True, True, False, False, False]


def _five_tuples(n):
    return [(f"img_{i}.jpg", f"id{i}", [float(i), 2.0, 10.0, 12.0], f"the thing {i}", "useless placeholder")
            for i in range(n)]


def _three_tuples(n):
    return [(f"img_{i}.jpg", [float(i), 2.0, 10.0 + i, 12.0], f"thing {i}") for i in range(n)]


@pytest.mark.parametrize("make,dataset", [(_five_tuples, "unc"), (_three_tuples, "flickr")])
def test_official_subsets_round_trip_in_the_input_layout(tmp_path, make, dataset):
    samples = make(6)
    r = [0.0, 0.05, 0.35, 0.5, 0.95, 1.0]
    files = write_official_subsets(samples, r, str(tmp_path), dataset)
    names = sorted(os.listdir(tmp_path))
    assert names == sorted([f"{dataset}_train_pseudo_refine_0_{t}.pth" for t in range(10)]
                           + [f"{dataset}_train_pseudo_refine_1_0.pth", f"{dataset}_train_pseudo_bad_label_0_0.pth",
                              f"{dataset}_train_pseudo_bad_label_0_4.pth"])

    def load(suffix):
        return torch.load(tmp_path / f"{dataset}_train_pseudo_{suffix}.pth", weights_only=True)

    assert load("refine_0_0") == samples[1:]
    assert load("refine_0_5") == samples[4:]
    assert load("refine_1_0") == samples[5:]
    assert load("bad_label_0_0") == samples[:1]
    assert load("bad_label_0_4") == samples[:3]
    assert all(isinstance(s, tuple) and len(s) == len(samples[0]) for s in load("refine_0_0"))
    assert files["refine_0_3"]["count"] == 4
    with pytest.raises(ValueError, match="6 samples but 5"):
        write_official_subsets(samples, r[:5], str(tmp_path), dataset)


def _write_predictions(path, samples, ious):
    with open(path, "w") as fh:
        for i, (s, iou) in enumerate(zip(samples, ious)):
            fh.write(json.dumps({"index": i, "image": s[0], "query": s[3], "target_xyxy": [0, 0, 1, 1],
                                 "pred_xyxy": [0, 0, 1, 1], "iou": iou}) + "\n")


def test_write_scoring_outputs_writes_every_output(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    samples = _five_tuples(8)
    ious = [0.0, 0.0, 0.2, 0.45, 0.5, 0.8, 0.9999999999, 1.0]
    jsonl = tmp_path / "unc_train_pseudo_reliability.jsonl"
    _write_predictions(jsonl, samples, ious)
    writer = SummaryWriter(str(tmp_path / "tb"))
    summary = write_scoring_outputs(str(jsonl), samples, str(tmp_path), "unc", "train_pseudo", tb_writer=writer)
    writer.close()

    hist = json.load(open(tmp_path / "unc_train_pseudo_reliability_histogram.json"))
    assert hist["bins"] == 1000 and len(hist["counts"]) == 1000 and hist["count_zero"] == 2
    assert sum(hist["counts"]) == 6 and hist["counts"][999] == 2 and hist["counts"][499] == 1
    png = tmp_path / "unc_train_pseudo_reliability_histogram.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.load(open(tmp_path / "unc_train_pseudo_reliability_summary.json"))
    assert saved["n"] == 8 and saved["count_zero"] == 2 and saved["share_at_least_0_5"] == pytest.approx(0.5)
    assert summary["subsets"]["refine_1_0"]["count"] == 2
    assert torch.load(tmp_path / "unc_train_pseudo_refine_0_4.pth", weights_only=True) == samples[3:]

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    (event,) = acc.Histograms("reliability/unc_train_pseudo")
    assert event.histogram_value.num == 8
    assert event.histogram_value.bucket[0] == 2  # the zero bucket
    assert sum(event.histogram_value.bucket) == 8


def test_load_reliabilities_rejects_mismatches(tmp_path):
    samples = _five_tuples(3)
    path = tmp_path / "p.jsonl"
    _write_predictions(path, samples, [0.1, 0.2, 0.3])
    assert load_reliabilities(str(path), samples).tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="3 rows but the split has 4"):
        load_reliabilities(str(path), _five_tuples(4))
    with pytest.raises(ValueError, match="another split"):
        load_reliabilities(str(path), [("other.jpg",) + s[1:] for s in samples])
    rows = [json.loads(line) for line in open(path)]
    rows[1]["index"] = 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="line 2: index 2, expected 1"):
        load_reliabilities(str(path))
    rows[1]["index"], rows[1]["iou"] = 1, 1.7
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="sample 1"):
        load_reliabilities(str(path))
