"""The demo (``python demo.py``) end to end in its reduced configuration: every stage runs through the real
scripts, the result files are complete, and a rerun reuses every finished stage."""
import json
import os

import torch

from benchmarks import amp_accuracy
from curriculum.runs.command_line import budget_epochs
from demo import pipeline
from demo.synthetic import KINDS

MODELS = ("all template labels (no selection)", "SSA (template)", "MSA (template + caption + relation)",
          "fully supervised (ground truth)")


def test_quick_demo_writes_results_and_reruns_from_cache(tmp_path, capsys):
    out = tmp_path / "demo"
    results = pipeline.main(["--output_dir", str(out), "--preset", "quick"])

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["results"] == results["results"]
    for name in (*MODELS, "centre box", "largest object"):
        for split in pipeline.SPLITS:
            score = on_disk["results"][name][split]
            assert 0.0 <= score["accuracy"] <= 1.0 and 0.0 <= score["miou"] <= 1.0
            assert score["samples"] > 0
    for name in MODELS:  # per expression kind: the counts and hits add up to the whole split
        for split in pipeline.SPLITS:
            score = on_disk["results"][name][split]
            by_kind = score["by_kind"]
            assert set(by_kind) <= set(KINDS) and sum(k["samples"] for k in by_kind.values()) == score["samples"]
            hits = sum(k["accuracy"] * k["samples"] for k in by_kind.values())
            assert abs(hits - score["accuracy"] * score["samples"]) < 1e-6
            # a box on its target is on an object (one sample of slack: the two IoUs are computed in different
            # coordinates, canvas and original pixels)
            assert score["accuracy"] - 1 / score["samples"] <= score["on_object"] <= 1.0
    assert on_disk["msa"]["order"] == ["template", "caption", "relation"]
    assert 0.0 <= on_disk["ssa"]["h_star"] <= 1.0
    # each model against the one before it in the table on the same samples (McNemar's exact test): the discordant
    # counts make up the accuracy difference (up to the same sample of slack per model as above)
    assert [(t["model"], t["baseline"]) for t in on_disk["paired_tests"]] == list(zip(MODELS[1:], MODELS))
    for test in on_disk["paired_tests"]:
        for split in pipeline.SPLITS:
            model, baseline = on_disk["results"][test["model"]][split], on_disk["results"][test["baseline"]][split]
            difference = (model["accuracy"] - baseline["accuracy"]) * model["samples"]
            assert abs(test[split]["only_model"] - test[split]["only_baseline"] - difference) <= 2 + 1e-6
            assert 0.0 < test[split]["p_value"] <= 1.0
    for figure in on_disk["figures"]:
        assert (out / figure).stat().st_size > 0
    assert {os.path.basename(f) for f in on_disk["figures"]} == {"ssa_template_reliability.png",
                                                                  "msa_reliability_matrix.png"}
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in MODELS) and "by expression kind" in table
    assert "predicted box on some object" in table and "McNemar's exact test" in table
    assert table in capsys.readouterr().out

    # the tiny CLIP is an OpenAI-format file every run loaded through --model PATH
    assert (out / "clip" / "tiny_clip.pt").is_file()
    args_line = (out / "runs" / "baseline_all_template" / "output" / "log.txt").read_text().splitlines()[0]
    assert str(out / "clip" / "tiny_clip.pt") in args_line

    # identical runs are trained once: SSA's candidate on all labels is the baseline, as is MSA's first one
    baseline_dir = str(out / "runs" / "baseline_all_template")
    ssa_steps = json.loads((out / "ssa" / "ssa_state.json").read_text())["steps"]
    msa_steps = json.loads((out / "msa" / "msa_state.json").read_text())["steps"]
    assert ssa_steps["h_0_0"]["reused_from"] == baseline_dir
    assert msa_steps["step1_template_by_template_h_0_0"]["reused_from"] == baseline_dir
    assert msa_steps["score_template_on_template"]["reused_from"] == str(out / "ssa" / "runs" / "score")

    checkpoint = out / "runs" / "baseline_all_template" / "output" / "best_checkpoint.pth"
    before = checkpoint.stat().st_mtime_ns
    again = pipeline.main(["--output_dir", str(out), "--preset", "quick"])
    assert again["results"] == results["results"] and again["paired_tests"] == results["paired_tests"]
    assert checkpoint.stat().st_mtime_ns == before
    assert "pseudo labels: cached" in capsys.readouterr().out

    # benchmarks/amp_accuracy.py --demo compares the four models under fp32 and bf16 on every split
    compared = amp_accuracy.main(["--demo", str(out), "--threads", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(compared))
    assert list(compared["results"]) == list(MODELS) and compared["splits"] == list(pipeline.SPLITS)
    for name in MODELS:
        for split in pipeline.SPLITS:
            cell = compared["results"][name][split]
            assert cell["samples"] == results["results"][name][split]["samples"]
            assert 0.0 < cell["max_abs_box_diff_px"] < 0.05 * 64  # bf16 really ran, and stayed close
    assert compared["summary"]["samples"] == sum(results["results"][n][s]["samples"] for n in MODELS
                                                 for s in pipeline.SPLITS)


def test_quick_demo_with_an_update_budget_gives_every_run_that_many_steps(tmp_path):
    out = tmp_path / "demo"
    pipeline.main(["--output_dir", str(out), "--preset", "quick"])
    # a changed configuration in the same output folder: the SSA / MSA drivers restart their steps, no refusal
    results = pipeline.main(["--output_dir", str(out), "--preset", "quick", "--update_budget", "40"])
    batch = 16  # the quick preset's --batch_size, one process
    logged = {}
    for name in ("baseline_all_template", "supervised"):
        record = json.loads((out / "runs" / name / "run.json").read_text())
        epochs = int(record["command"][record["command"].index("--epochs") + 1])
        samples = len(torch.load(out / "runs" / name / "splits" / "synthetic" /
                                 ("synthetic_train.pth" if name == "supervised" else "synthetic_train_pseudo.pth"),
                                 weights_only=False))
        assert epochs == budget_epochs(samples, 1, 40, batch) and epochs * (samples // batch) >= 40
        rows = [json.loads(line) for line in (out / "runs" / name / "output" / "log.txt").read_text().splitlines()[1:]]
        assert sum(r["train_steps"] for r in rows) == 40 and len(rows) == epochs
        logged[name] = epochs
    assert logged["supervised"] > logged["baseline_all_template"]  # fewer samples, more epochs
    ssa_steps = json.loads((out / "ssa" / "ssa_state.json").read_text())["steps"]
    assert ssa_steps["h_0_0"]["reused_from"] == str(out / "runs" / "baseline_all_template")
    assert results["config"]["update_budget"] == 40
    assert json.loads((out / "results.json").read_text())["config"]["update_budget"] == 40


def test_on_object_rate_counts_boxes_on_any_shape(tmp_path):
    scenes = {"a.jpg": {"objects": [{"box": [0, 0, 10, 10]}, {"box": [20, 20, 40, 40]}]}}
    rows = [{"image": "a.jpg", "pred_xyxy": [0, 0, 10, 9]},      # the first shape (IoU 0.9)
            {"image": "a.jpg", "pred_xyxy": [21, 20, 40, 41]},    # the second shape
            {"image": "a.jpg", "pred_xyxy": [5, 5, 25, 25]},      # between the two: on neither
            {"image": "a.jpg", "pred_xyxy": [0, 0, 10, 20]}]      # IoU exactly 0.5 with the first: counts
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pipeline.on_object_rate(str(path), scenes) == 0.75


def test_training_processes_get_one_lanes_threads_whatever_is_idle(tmp_path, monkeypatch):
    # a run's thread count changes its float rounding: a share that depended on which lanes idle would make two
    # runs of one seed differ, so every training process gets one lane's threads; evaluations may take more
    monkeypatch.setattr(pipeline, "available_cpus", lambda: 8)
    config = pipeline.PRESETS["full"]
    d = pipeline.Demo(str(tmp_path), config, 0, "cpu")
    assert config.parallel_runs == 2 and d.training_env() == {"OMP_NUM_THREADS": "4"}
    assert d.lane_threads(2) == 8
    captured = []

    class Launcher:
        def __init__(self, *args, env=None, **kwargs):
            captured.append(env)

        def run(self, *args, **kwargs):
            return {"result": {"val_accu": 0.5, "best_epoch": 0}}

    monkeypatch.setattr(pipeline, "TrainLauncher", Launcher)
    job = pipeline.Job("x", lambda done, lanes: d._train("x", [("a.jpg", "", [0, 0, 1, 1], "a", "")] * 64, 1, None, (),
                                                     "train_pseudo"))
    assert pipeline.run_jobs([job], 2)["x"]["val_accu"] == 0.5  # alone on two lanes, still one lane's threads
    assert captured == [{"OMP_NUM_THREADS": "4"}]
