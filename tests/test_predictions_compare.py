"""The paired test (McNemar's exact) of two models on the same evaluation samples, on hand-computed counts."""
import json

import pytest

from demo import pipeline
from utils import predictions


@pytest.mark.parametrize("only_model, only_baseline, expected", [
    (1, 5, 14 / 64),   # 2 * P(X <= 1), X ~ Binomial(6, 1/2) = 2 * (1 + 6) / 64
    (6, 0, 2 / 64),    # 2 * P(X = 6)
    (0, 6, 2 / 64),    # symmetric
    (3, 3, 1.0),       # an even split is no evidence of a difference
    (0, 0, 1.0),       # no discordant sample
    (2, 8, 112 / 1024),  # 2 * (1 + 10 + 45) / 1024
])
def test_mcnemar_exact_p_on_hand_computed_counts(only_model, only_baseline, expected):
    assert predictions.mcnemar_exact_p(only_model, only_baseline) == pytest.approx(expected, rel=1e-12)


def _predictions(path, ious):
    path.write_text("".join(json.dumps({"index": i, "image": "x.jpg", "query": "q", "target_xyxy": [0, 0, 1, 1],
                                        "pred_xyxy": [0, 0, 1, 1], "iou": iou}) + "\n" for i, iou in ious))
    return str(path)


def test_paired_comparison_counts_discordant_samples_by_index(tmp_path):
    # Sample indices 0-7 in a different line order per file; IoU 0.5 counts as correct, as in eval.py.
    model = _predictions(tmp_path / "model.jsonl",
                         [(3, 0.9), (0, 0.5), (1, 0.7), (2, 0.1), (4, 0.6), (5, 0.8), (6, 0.0), (7, 0.55)])
    baseline = _predictions(tmp_path / "baseline.jsonl",
                            [(0, 0.2), (1, 0.9), (2, 0.6), (3, 0.49), (4, 0.3), (5, 0.1), (6, 0.0), (7, 0.7)])
    # correct for the model only: 0, 3, 4, 5; for the baseline only: 2; both: 1, 7; neither: 6
    result = predictions.paired_comparison(model, baseline)
    assert result == {"only_model": 4, "only_baseline": 1, "p_value": pytest.approx(12 / 32)}  # 2 * (1 + 5) / 32


def test_paired_comparison_refuses_different_samples(tmp_path):
    model = _predictions(tmp_path / "model.jsonl", [(0, 0.9), (1, 0.9)])
    baseline = _predictions(tmp_path / "baseline.jsonl", [(0, 0.9), (2, 0.9)])
    with pytest.raises(ValueError, match="same samples"):
        predictions.paired_comparison(model, baseline)


def test_results_table_shows_the_paired_tests():
    scores = {s: {"accuracy": 0.5, "miou": 0.5} for s in pipeline.SPLITS}
    results = {"results": {"SSA": scores, "none": scores}, "train_samples": {}, "seed": 0, "seconds": 1.0,
               "ssa": {"h_star": 0.5}, "msa": {"order": ["template"]},
               "paired_tests": [{"model": "SSA", "baseline": "none",
                                 **{s: {"only_model": 6, "only_baseline": 0, "p_value": 2 / 64} for s in pipeline.SPLITS}}]}
    assert "| SSA | none | 6 / 0 (0.0312) | 6 / 0 (0.0312) | 6 / 0 (0.0312) |" in pipeline.results_markdown(results)
