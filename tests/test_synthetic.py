"""Synthetic referring world: determinism, layout, unambiguous ground truth, families, upstream outputs and noise,
caption corpus, cache and CLI."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DATASETS, build_dataset
from demo.synthetic import (CLASSES, COLOURS, FAMILIES, KINDS, SPLITS, ExpressionSpec, Pose, Scene, SceneObject,
                            SyntheticConfig, build_world, class_texture, describe_matches, generate, output_paths,
                            relation_holds, render_scene, rng_for)
from demo.synthetic import world as world_writer
from demo.synthetic.cli import main
from utils.args import parse_args
from utils.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = SyntheticConfig(seed=3, n_train_images=6, n_val_images=3, n_testA_images=3, n_testB_images=3, n_pretrain=4)
NOISE = ("box_jitter", "miss_rate", "spurious_rate", "class_error_rate", "wrong_attribute_rate", "duplicate_rate",
         "caption_error_rate", "relation_error_rate")


def make(tmp_path, name, config=TINY):
    data_root, split_root = str(tmp_path / name / "data"), str(tmp_path / name / "splits")
    return generate(data_root, split_root, config), output_paths(data_root, split_root)


def output_files(paths):
    """Every file the generator wrote, relative to its folder: name -> bytes."""
    out = {}
    for key in ("root",):
        for folder, _, files in os.walk(paths[key]):
            for f in files:
                out[os.path.relpath(os.path.join(folder, f), paths[key])] = open(os.path.join(folder, f), "rb").read()
    for split in SPLITS:
        out[f"split_{split}"] = open(paths[f"split_{split}"], "rb").read()
    return out


def load_json(paths, key):
    with open(paths[key]) as f:
        return json.load(f)


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    _, a = make(tmp_path, "a")
    _, b = make(tmp_path, "b")
    files_a, files_b = output_files(a), output_files(b)
    assert files_a == files_b
    assert any(name.startswith("images/") for name in files_a) and "upstream/detections.json" in files_a
    _, c = make(tmp_path, "c", dataclasses.replace(TINY, seed=4))
    files_c = output_files(c)
    for key in ("split_train", "split_val", "upstream/detections.json", "upstream/captions.json",
                "pretrain/caption_corpus.json"):
        assert files_c[key] != files_a[key], key


def test_split_files_hold_official_five_tuples_with_pixel_xywh_boxes_inside_existing_images(tmp_path):
    summary, paths = make(tmp_path, "w")
    sizes = TINY.split_sizes()
    for split in SPLITS:
        samples = torch.load(paths[f"split_{split}"], weights_only=True)
        assert len(samples) == summary["splits"][split]["expressions"] >= sizes[split]
        images = set()
        for image, object_id, box, phrase, kind in samples:
            assert isinstance(object_id, str) and kind in KINDS and isinstance(phrase, str) and phrase.strip()
            assert len(box) == 4 and all(isinstance(v, float) and v == int(v) for v in box)
            x, y, w, h = box
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= TINY.image_size and y + h <= TINY.image_size
            images.add(image)
        assert len(images) == sizes[split]
        for image in images:
            with Image.open(os.path.join(paths["images"], image)) as im:
                assert im.size == (TINY.image_size, TINY.image_size) and im.format == "JPEG"


def test_loader_reads_every_split_and_builds_trainval_from_train_and_val(tmp_path):
    _, paths = make(tmp_path, "w")
    data_root, split_root = os.path.dirname(paths["root"]), os.path.dirname(os.path.dirname(paths["split_val"]))
    args = parse_args("train", ["--dataset", "synthetic", "--data_root", data_root, "--split_root", split_root,
                                "--imsize", "64"])
    lengths = {split: len(build_dataset(split, args)) for split in (*SPLITS, "trainval")}
    assert lengths["trainval"] == lengths["train"] + lengths["val"]
    item = build_dataset("val", args)[0]
    assert item["img"].shape == (3, 64, 64) and bool(((item["box"] > 0) & (item["box"] <= 1)).all())


def test_every_ground_truth_expression_describes_exactly_its_target():
    world = build_world(dataclasses.replace(TINY, n_train_images=40, n_val_images=20, n_pretrain=0))
    kinds = set()
    for scenes in world.splits.values():
        for scene in scenes:
            assert 1 <= len(scene.expressions) <= TINY.expressions_per_image
            for e in scene.expressions:
                assert describe_matches(scene, e.spec) == [e.target], (scene.image, e.phrase)
                assert describe_matches(scene, ExpressionSpec.from_dict(e.spec.to_dict())) == [e.target]
                kinds.add(e.kind)
    assert kinds == set(KINDS)


def test_over_specified_human_expressions_add_true_words_and_keep_the_rest_of_the_world():
    """People name the class and say the colour beyond the shortest unique description; at rate 1 every human
    expression does, each still picks out exactly its target, and nothing but the expressions changes."""
    base = dataclasses.replace(TINY, n_train_images=30, n_val_images=10, n_pretrain=0)
    minimal = build_world(base)
    over = build_world(dataclasses.replace(base, overspecify_category=1.0, overspecify_colour=1.0))
    longer = 0
    for split in minimal.splits:
        for plain, full in zip(minimal.splits[split], over.splits[split]):
            assert plain.objects == full.objects  # the same scenes
            objects = {o.id: o for o in full.objects}
            for e in full.expressions:
                assert describe_matches(full, e.spec) == [e.target], (full.image, e.phrase)
                if e.kind != "caption":
                    target = objects[e.target]
                    assert e.spec.category == target.category and e.spec.colour == target.colour, e.phrase
                    assert e.kind != "category"  # a category expression that gains its colour is an attribute one
            longer += sum(len(e.phrase.split()) for e in full.expressions if e.kind != "caption")
            longer -= sum(len(e.phrase.split()) for e in plain.expressions if e.kind != "caption")
    assert longer > 0
    half = build_world(dataclasses.replace(base, overspecify_colour=0.5))
    said = [e.spec.colour is not None for scenes in half.splits.values() for scene in scenes
            for e in scene.expressions if e.kind != "caption"]
    assert 0.5 < sum(said) / len(said) < 1.0


def test_annotations_record_the_split_targets_and_specs(tmp_path):
    _, paths = make(tmp_path, "w")
    annotations = load_json(paths, "annotations")
    for split in SPLITS:
        samples = torch.load(paths[f"split_{split}"], weights_only=True)
        rows = [(s["image"], s, e) for s in annotations[split] for e in s["expressions"]]
        assert len(rows) == len(samples)
        for (image, scene, e), (s_image, _, box, phrase, kind) in zip(rows, samples):
            x1, y1, x2, y2 = scene["objects"][e["target"]]["box"]
            assert (image, phrase, kind) == (s_image, e["phrase"], e["kind"]) and box == [x1, y1, x2 - x1, y2 - y1]


def obj(i, category, colour, size, box):
    return SceneObject(i, category, colour, size, tuple(float(v) for v in box), Pose(0, 0, 0, 0, 0))


SCENE = Scene("x.jpg", 128, 128, (
    obj(0, "circle", "red", "small", (10, 50, 30, 70)),       # left
    obj(1, "circle", "red", "large", (90, 45, 135 - 7, 90)),  # right, big
    obj(2, "square", "blue", "medium", (92, 100, 124, 126)),  # below circle 1
    obj(3, "star", "green", "small", (50, 5, 70, 25)),        # top middle
))


@pytest.mark.parametrize("spec, expected", [
    (ExpressionSpec(category="circle"), [0, 1]),
    (ExpressionSpec(category="circle", size="small"), [0]),
    (ExpressionSpec(colour="red"), [0, 1]),
    (ExpressionSpec(category="circle", location=("left",)), [0]),
    (ExpressionSpec(category="circle", location=("right",)), [1]),
    (ExpressionSpec(category="circle", location=("middle",)), []),
    (ExpressionSpec(category="star", location=("top",)), [3]),
    (ExpressionSpec(category="star", location=("bottom",)), []),
    (ExpressionSpec(category="circle", relation=("above", ExpressionSpec(category="square"))), [1]),
    (ExpressionSpec(category="square", relation=("below", ExpressionSpec(category="circle", size="large"))), [2]),
    (ExpressionSpec(category="circle", relation=("left of", ExpressionSpec(category="circle"))), [0]),
    (ExpressionSpec(relation=("next to", ExpressionSpec(category="square"))), [1]),
    (ExpressionSpec(category="triangle"), []),
])
def test_describe_matches_semantics_on_a_hand_made_scene(spec, expected):
    assert describe_matches(SCENE, spec) == expected


def test_relations_are_exclusive_in_direction_and_strict_implies_loose():
    a, b = SCENE.objects[0], SCENE.objects[1]
    assert relation_holds(a, b, "left of", 128) and relation_holds(b, a, "right of", 128)
    assert not relation_holds(a, b, "above", 128) and not relation_holds(a, b, "below", 128)
    rng = np.random.default_rng(0)
    for _ in range(200):
        p, q = (obj(i, "square", "red", "small", (x, y, x + 20, y + 20))
                for i, (x, y) in enumerate(rng.uniform(0, 100, (2, 2))))
        for predicate in ("left of", "right of", "above", "below", "next to"):
            assert not relation_holds(p, q, predicate, 128, strict=True) or relation_holds(p, q, predicate, 128)


def test_size_classes_are_visually_distinct_for_every_category():
    world = build_world(dataclasses.replace(TINY, n_train_images=150, n_pretrain=0))
    extents = {}
    for scene in world.splits["train"]:
        for o in scene.objects:
            extents.setdefault((o.category, o.size), []).append(max(o.box[2] - o.box[0], o.box[3] - o.box[1]))
    for category in CLASSES:
        small, medium, large = (extents[(category, size)] for size in ("small", "medium", "large"))
        assert max(small) < min(medium) and max(medium) < min(large), category


def test_object_scale_enlarges_every_shape_and_keeps_them_in_the_image():
    base = dataclasses.replace(TINY, n_train_images=60, n_pretrain=0, image_size=64, min_objects=2, max_objects=3)
    extents = {}
    for scale in (1.0, 1.5):
        world = build_world(dataclasses.replace(base, object_scale=scale))
        objects = [o for scene in world.splits["train"] for o in scene.objects]
        assert all(0 <= o.box[0] < o.box[2] <= 64 and 0 <= o.box[1] < o.box[3] <= 64 for o in objects)
        extents[scale] = {size: sum(max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in objects if o.size == size)
                          / sum(o.size == size for o in objects) for size in ("small", "medium", "large")}
    for size in ("small", "medium", "large"):
        assert 1.35 < extents[1.5][size] / extents[1.0][size] < 1.65, size


def test_class_textures_only_darken_shapes_with_one_pattern_per_class(tmp_path):
    patterns = [class_texture(c, 64) for c in CLASSES]
    assert patterns[0].all() and all(0.3 < p.mean() < 0.8 for p in patterns[1:])
    assert len({p.tobytes() for p in patterns}) == len(CLASSES)
    config = dataclasses.replace(TINY, image_size=64, class_textures=True)
    world = build_world(config)
    assert world.splits == build_world(dataclasses.replace(config, class_textures=False)).splits  # same scenes
    changed = 0
    for index, scene in enumerate(world.splits["train"]):
        plain = np.asarray(render_scene(scene, rng_for(config, "render", "train", index))).astype(int)
        textured = np.asarray(render_scene(scene, rng_for(config, "render", "train", index), True)).astype(int)
        inside = np.zeros(plain.shape[:2], dtype=bool)
        for obj in scene.objects:
            x1, y1, x2, y2 = (int(v) for v in obj.box)
            inside[max(0, y1 - 1):y2 + 2, max(0, x1 - 1):x2 + 2] = True
        assert (textured[~inside] == plain[~inside]).all()  # the background is untouched
        assert (textured <= plain).all()  # textures only darken
        changed += int((textured != plain).any())
    assert changed >= len(world.splits["train"]) - 1  # a scene of circles only is the one way to stay unchanged
    args = ["--data_root", str(tmp_path / "d"), "--split_root", str(tmp_path / "s"), "--seed", "3",
            "--n_train_images", "2", "--n_val_images", "1", "--n_testA_images", "1", "--n_testB_images", "1",
            "--n_pretrain", "0", "--image_size", "64", "--class_textures"]
    main(args)
    assert json.loads((tmp_path / "d" / "synthetic" / "world.json").read_text())["config"]["class_textures"] is True


def test_test_splits_target_one_family_each_and_val_mixes_both():
    world = build_world(dataclasses.replace(TINY, n_val_images=12, n_testA_images=8, n_testB_images=8,
                                            n_pretrain=0))
    for split, family in (("testA", "round"), ("testB", "angular")):
        targets = [s.obj(e.target) for s in world.splits[split] for e in s.expressions]
        assert targets and all(t.family == family for t in targets)
    val_families = {s.obj(e.target).family for s in world.splits["val"] for e in s.expressions}
    assert val_families == set(FAMILIES)


def test_upstream_outputs_follow_the_documented_formats_for_train_images_only(tmp_path):
    _, paths = make(tmp_path, "w")
    train_images = [s["image"] for s in load_json(paths, "annotations")["train"]]
    side = TINY.image_size

    def check_box(box):
        assert len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
        assert 0 <= box[0] < box[2] <= side and 0 <= box[1] < box[3] <= side

    for key, inner in (("detections", "objects"), ("attributes", "objects"), ("scene_graphs", "triplets"),
                       ("captions", "captions")):
        records = load_json(paths, key)["images"]
        assert [r["image"] for r in records] == train_images, key
        for r in records:
            assert isinstance(r[inner], list)
    for r in load_json(paths, "detections")["images"]:
        assert (r["width"], r["height"]) == (side, side)
        for o in r["objects"]:
            assert set(o) == {"box", "class", "score"} and o["class"] in CLASSES and 0 < o["score"] <= 1
            check_box(o["box"])
    for r in load_json(paths, "attributes")["images"]:
        for o in r["objects"]:
            assert set(o) == {"box", "class", "attribute", "score"} and isinstance(o["attribute"], str)
            check_box(o["box"])
    for r in load_json(paths, "scene_graphs")["images"]:
        for t in r["triplets"]:
            assert set(t) == {"subject", "predicate", "object", "score"} and isinstance(t["predicate"], str)
            for end in (t["subject"], t["object"]):
                assert end["class"] in CLASSES
                check_box(end["box"])
    for r in load_json(paths, "captions")["images"]:
        assert len(r["captions"]) == TINY.captions_per_image and all(isinstance(c, str) and c for c in r["captions"])
    assert set(load_json(paths, "synonyms")) == set(CLASSES)
    assert all(c in words for c, words in load_json(paths, "synonyms").items())


def test_without_noise_the_upstream_models_report_the_true_scene(tmp_path):
    clean = dataclasses.replace(TINY, **{k: 0.0 for k in NOISE})
    _, paths = make(tmp_path, "clean", clean)
    scenes = {s["image"]: s for s in load_json(paths, "annotations")["train"]}
    for r in load_json(paths, "detections")["images"]:
        truth = sorted((o["box"], o["class"]) for o in scenes[r["image"]]["objects"])
        assert sorted((o["box"], o["class"]) for o in r["objects"]) == truth
    for r in load_json(paths, "attributes")["images"]:
        colours = {tuple(o["box"]): o["colour"] for o in scenes[r["image"]]["objects"]}
        sizes = {tuple(o["box"]): o["size"] for o in scenes[r["image"]]["objects"]}
        for o in r["objects"]:
            assert o["attribute"] in (colours[tuple(o["box"])], sizes[tuple(o["box"])])
    world = build_world(dataclasses.replace(clean, n_pretrain=0))
    for r, scene in zip(load_json(paths, "scene_graphs")["images"], world.splits["train"]):
        by_box = {o.box: o for o in scene.objects}
        for t in r["triplets"]:
            subject, ref = by_box[tuple(t["subject"]["box"])], by_box[tuple(t["object"]["box"])]
            assert relation_holds(subject, ref, t["predicate"], clean.image_size, strict=True)


def test_noise_knobs_raise_measurable_noise_and_leave_the_scenes_unchanged(tmp_path):
    low = dataclasses.replace(TINY, n_train_images=60, n_pretrain=0, box_jitter=0.02, miss_rate=0.05,
                              spurious_rate=0.2, wrong_attribute_rate=0.05, duplicate_rate=0.05,
                              relation_error_rate=0.05, caption_error_rate=0.05)
    high = dataclasses.replace(low, box_jitter=0.15, miss_rate=0.3, spurious_rate=1.5, wrong_attribute_rate=0.4,
                               duplicate_rate=0.3, relation_error_rate=0.4, caption_error_rate=0.4)
    s_low, p_low = make(tmp_path, "low", low)
    s_high, p_high = make(tmp_path, "high", high)
    u_low, u_high = s_low["upstream"], s_high["upstream"]
    assert u_high["mean_iou_detected"] < u_low["mean_iou_detected"] - 0.05
    for key in ("missed", "spurious", "duplicates", "wrong_attributes", "wrong_triplets", "wrong_captions"):
        assert u_high[key] > u_low[key], key
    assert open(p_low["split_train"], "rb").read() == open(p_high["split_train"], "rb").read()
    assert open(p_low["annotations"], "rb").read() == open(p_high["annotations"], "rb").read()


def test_caption_corpus_pairs_separate_images_with_captions_naming_their_objects(tmp_path):
    _, paths = make(tmp_path, "w")
    corpus = load_json(paths, "caption_corpus")
    folder = os.path.join(os.path.dirname(paths["caption_corpus"]), corpus["image_dir"])
    assert len(corpus["pairs"]) == TINY.n_pretrain
    split_images = set(os.listdir(paths["images"]))
    for pair in corpus["pairs"]:
        assert pair["image"] not in split_images
        with Image.open(os.path.join(folder, pair["image"])) as im:
            assert im.size == (TINY.image_size, TINY.image_size)
        assert any(colour in pair["caption"] for colour in COLOURS)
    world = load_json(paths, "world")
    assert world["config"] == TINY.to_dict() and set(world["vocabulary"]["classes"]) == set(CLASSES)


def test_second_run_uses_the_cache_and_a_new_config_regenerates_and_drops_stale_images(tmp_path):
    first, paths = make(tmp_path, "w")
    mtime = os.path.getmtime(paths["split_train"])
    again, _ = make(tmp_path, "w")
    assert not first["cached"] and again["cached"] and os.path.getmtime(paths["split_train"]) == mtime
    assert {k: v for k, v in again.items() if k not in ("cached", "seconds")} == \
           {k: v for k, v in first.items() if k not in ("cached", "seconds")}
    smaller = dataclasses.replace(TINY, n_testB_images=1, n_pretrain=2)
    third, _ = make(tmp_path, "w", smaller)
    assert not third["cached"]
    assert len(os.listdir(paths["images"])) == sum(smaller.split_sizes().values())
    assert len(os.listdir(paths["pretrain_images"])) == 2
    os.remove(os.path.join(paths["images"], sorted(os.listdir(paths["images"]))[0]))
    assert not make(tmp_path, "w", smaller)[0]["cached"]


def test_worker_processes_write_the_same_files_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(world_writer, "_PARALLEL_MIN_IMAGES", 0)  # the tiny world would otherwise stay in-process
    config = dataclasses.replace(TINY, n_train_images=9, n_pretrain=7)
    one = output_paths(str(tmp_path / "one" / "data"), str(tmp_path / "one" / "splits"))
    two = output_paths(str(tmp_path / "two" / "data"), str(tmp_path / "two" / "splits"))
    generate(str(tmp_path / "one" / "data"), str(tmp_path / "one" / "splits"), config, workers=1)
    generate(str(tmp_path / "two" / "data"), str(tmp_path / "two" / "splits"), config, workers=2)
    files = output_files(one)
    assert sum(name.startswith(("images/", "pretrain/pretrain_images/")) for name in files) == 9 + 3 * 3 + 7
    assert output_files(two) == files


def test_cli_matches_the_library_and_rejects_bad_values(tmp_path, capsys):
    flags = ["--seed", "3", "--n_train_images", "6", "--n_val_images", "3", "--n_testA_images", "3",
             "--n_testB_images", "3", "--n_pretrain", "4"]
    cli_root = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "demo.synthetic", "--data_root", str(cli_root / "data"),
                           "--split_root", str(cli_root / "splits"), *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["splits"]["val"]["images"] == 3 and printed["cached"] is False
    _, paths = make(tmp_path, "lib")
    cli_paths = output_paths(str(cli_root / "data"), str(cli_root / "splits"))
    assert output_files(cli_paths) == output_files(paths)
    with pytest.raises(UsageError, match="miss_rate"):
        main(["--data_root", str(tmp_path / "x"), "--split_root", str(tmp_path / "y"), "--miss_rate", "1.5"])
    with pytest.raises(UsageError, match="--workers 0"):
        main(["--data_root", str(tmp_path / "x"), "--split_root", str(tmp_path / "y"), "--workers", "0"])


@pytest.mark.parametrize("field, value", [("miss_rate", -0.1), ("spurious_rate", 5.0), ("min_objects", 1),
                                          ("max_objects", 9), ("expression_mix", (1.0, 0.0)),
                                          ("n_val_images", 0), ("box_jitter", 0.9), ("object_scale", 3.0),
                                          ("overspecify_colour", 1.5)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})


def test_the_core_knows_the_world_only_by_its_split_layout():
    # training, evaluation, scoring and the curriculum drivers run on the synthetic data set without the demo package
    code = ("import sys, datasets, engine, models, train_clip_vg, eval, eval_for_reliability_distribution, "
            "curriculum.ssa, curriculum.msa; print(sorted(m for m in sys.modules if m.split('.')[0] == 'demo'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert "synthetic" in DATASETS
