"""Sample layouts, merging, statistics, converters and input validation of the pseudo-label module."""
import json

import pytest
import torch

from datasets.records import LAYOUTS, BadSampleError, load_split_file, tuple_to_record
from pseudo_label_generation_module import convert, merge, stats
from utils.cli import run_cli
from pseudo_label_generation_module.inputs import (InputFormatError, load_attributes, load_captions,
                                                   load_detections, load_scene_graphs)
from pseudo_label_generation_module.lexicon import Lexicon
from pseudo_label_generation_module.samples import is_trainable_box, make_sample, save_samples


# ---------------------------------------------------------------- layouts

def test_make_sample_official_layouts():
    box = (10.0, 20.0, 110.0, 70.0)
    for name in ("unc", "unc+", "gref", "gref_umd", "synthetic"):
        assert make_sample(name, "i.jpg", box, "red car") == (
            "i.jpg", "useless placeholder", [10.0, 20.0, 100.0, 50.0], "red car", "useless placeholder")
    assert make_sample("referit", "i.jpg", box, "red car", extra="7.pth", extra2=["red"]) == (
        "i.jpg", "7.pth", [10.0, 20.0, 110.0, 70.0], "red car", ["red"])
    assert make_sample("flickr", "i.jpg", box, "red car") == ("i.jpg", [10.0, 20.0, 110.0, 70.0], "red car")
    with pytest.raises(ValueError, match="flickr samples have no extra"):
        make_sample("flickr", "i.jpg", box, "car", extra="x")
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        make_sample("coco", "i.jpg", box, "car")


def test_samples_load_through_the_datasets_code(tmp_path):
    box = (10.0, 20.0, 110.0, 70.0)
    for name in LAYOUTS:
        path = save_samples([make_sample(name, "i.jpg", box, "red car")], str(tmp_path / f"{name}.pth"))
        record = tuple_to_record(load_split_file(path)[0], name, 0)
        assert (record.image, record.box_xyxy, record.query) == ("i.jpg", box, "red car")


@pytest.mark.parametrize("dataset", ["unc", "referit", "flickr"])
@pytest.mark.parametrize("box", [(10.2, 0, 11.1, 50), (10.2, 0, 11.3, 50), (10.9, 0, 11.2, 50), (3, 4, 9, 4.5)])
def test_untrainable_boxes_are_those_the_training_code_would_reject(dataset, box):
    sample = make_sample(dataset, "i.jpg", box, "car")
    try:
        tuple_to_record(sample, dataset, 0)
        accepted = True
    except BadSampleError:
        accepted = False
    assert is_trainable_box(dataset, box) == accepted


# ---------------------------------------------------------------- merge

def _split(path, phrases, dataset="unc"):
    return save_samples([make_sample(dataset, "i.jpg", (0, 0, 10, 10), p) for p in phrases], str(path))


def test_merge_folder_sorts_by_order_number_and_writes_the_official_location(tmp_path):
    _split(tmp_path / "2_unc_train_pseudo_relation_0_5.pth", ["r"])
    _split(tmp_path / "10_unc_train_pseudo_caption.pth", ["c"])
    _split(tmp_path / "1_unc_train_pseudo_template_0_5.pth", ["t1", "t2"])
    _split(tmp_path / "1_unc+_train_pseudo_template_0_5.pth", ["other dataset"])
    (tmp_path / "notes.txt").write_text("x")
    out = merge.main(["--dataset", "unc", "--folder", str(tmp_path)])
    assert out == str(tmp_path / "unc" / "unc_train_pseudo.pth")
    assert [s[3] for s in torch.load(out, weights_only=True)] == ["t1", "t2", "r", "c"]
    files, ignored = merge.source_files(str(tmp_path), "unc")
    assert [(f.order, f.source, f.threshold) for f in files] == [(1, "template", "0_5"), (2, "relation", "0_5"),
                                                                 (10, "caption", None)]
    assert ignored == ["1_unc+_train_pseudo_template_0_5.pth"]


def test_merge_inputs_keep_the_given_order_and_check_layouts(tmp_path):
    a, b = _split(tmp_path / "a.pth", ["a"]), _split(tmp_path / "b.pth", ["b"])
    out = str(tmp_path / "m.pth")
    merge.main(["--dataset", "unc", "--inputs", b, a, "--output", out])
    assert [s[3] for s in torch.load(out, weights_only=True)] == ["b", "a"]
    f = _split(tmp_path / "f.pth", ["x"], dataset="flickr")
    with pytest.raises(ValueError, match=r"f\.pth: sample 0: expected a 5-field unc sample"):
        merge.merge_files([a, f], "unc")


def test_merge_rejects_repeated_order_numbers(tmp_path):
    _split(tmp_path / "1_unc_train_pseudo_template.pth", ["a"])
    _split(tmp_path / "1_unc_train_pseudo_caption.pth", ["b"])
    with pytest.raises(ValueError, match="two files have order number 1"):
        merge.source_files(str(tmp_path), "unc")


# ---------------------------------------------------------------- statistics

def test_entity_counts_follow_the_definition():
    lex = Lexicon(["man", "shirt", "car", "cup", "table"])
    assert [lex.count_entities(t) for t in ("man in white shirt", "left red car", "cup on the table",
                                            "two men near cars", "traffic lights")] == [2, 1, 2, 2, 1]
    # texts repeat in a source and their terms are remembered: a caller changing a returned list changes nothing
    found = lex.entities("man in white shirt")
    found.append("car")
    assert lex.entities("man in white shirt") == ["man", "shirt"] and lex.count_entities("man in white shirt") == 2


def test_statistics_on_a_known_set():
    samples = [make_sample("unc", "a.jpg", (0, 0, 9, 9), "man in white shirt"),
               make_sample("unc", "a.jpg", (0, 0, 9, 9), "left red car"),
               make_sample("unc", "b.jpg", (0, 0, 9, 9), "cup on the table")]
    s = stats.expression_statistics(samples, "unc", Lexicon(["man", "shirt", "car", "cup", "table"]))
    assert s == {"samples": 3, "images": 2, "mean_entities": 5 / 3, "vocabulary_size": 11,
                 "mean_length": 11 / 3, "length_histogram": {"3": 1, "4": 2}}
    empty = stats.expression_statistics([], "unc", Lexicon())
    assert empty["samples"] == 0 and empty["mean_entities"] is None


def test_box_agreement_with_reference_boxes(tmp_path):
    samples = [make_sample("unc", "a.jpg", (0, 0, 10, 10), "x"), make_sample("unc", "a.jpg", (50, 50, 60, 60), "y"),
               make_sample("unc", "c.jpg", (0, 0, 5, 5), "z")]
    reference = {"a.jpg": [(0.0, 0.0, 10.0, 11.0)], "b.jpg": [(0.0, 0.0, 1.0, 1.0)]}
    assert stats.box_agreement(samples, "unc", reference) == {"evaluated": 2, "agreeing": 1, "rate": 0.5,
                                                              "iou_threshold": 0.5}
    human = save_samples([make_sample("unc", "a.jpg", (0, 0, 10, 11), "the left box")], str(tmp_path / "h.pth"))
    assert stats.reference_boxes(human, "unc") == {"a.jpg": [(0.0, 0.0, 10.0, 11.0)]}


def test_stats_cli_orders_sources_easy_to_hard(tmp_path):
    _split(tmp_path / "1_unc_train_pseudo_template_0_5.pth", ["red car", "left man"])
    _split(tmp_path / "3_unc_train_pseudo_caption_0_5.pth", ["a man riding a horse next to a car"])
    _split(tmp_path / "rel.pth", ["man riding horse"])
    out = tmp_path / "stats.json"
    human = save_samples([make_sample("unc", "i.jpg", (0, 0, 10, 10), "the box")], str(tmp_path / "unc_train.pth"))
    stats.main(["--dataset", "unc", str(tmp_path / "3_unc_train_pseudo_caption_0_5.pth"),
                f"relation={tmp_path / 'rel.pth'}", str(tmp_path / "1_unc_train_pseudo_template_0_5.pth"),
                "--reference", human, "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["msa_order"] == ["template", "relation", "caption"]
    assert [report["sources"][n]["mean_entities"] for n in report["msa_order"]] == [1.0, 2.0, 3.0]
    assert report["sources"]["template"]["box_agreement"]["rate"] == 1.0


# ---------------------------------------------------------------- converters

def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


COCO_ANN = {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
                       {"id": 2, "file_name": "b.jpg", "width": 320, "height": 240}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]}


def test_coco_detections_converter(tmp_path):
    ann = _write(tmp_path, "ann.json", COCO_ANN)
    res = _write(tmp_path, "res.json", [{"image_id": 2, "category_id": 18, "bbox": [10, 20, 30, 40], "score": 0.9},
                                        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.01}])
    out = str(tmp_path / "det.json")
    convert.main(["coco-detections", "--results", res, "--annotations", ann, "--min_score", "0.05",
                  "--output", out])
    dets = load_detections(out)
    assert [(d.image, d.width, len(d.objects)) for d in dets] == [("a.jpg", 640, 0), ("b.jpg", 320, 1)]
    assert (dets[1].objects[0].box, dets[1].objects[0].cls) == ((10.0, 20.0, 40.0, 60.0), "dog")
    bad = _write(tmp_path, "bad.json", [{"image_id": 9, "category_id": 18, "bbox": [0, 0, 1, 1], "score": 1}])
    with pytest.raises(InputFormatError, match=r"bad\.json: \[0\]: image_id 9 is not in"):
        convert.coco_detections(bad, ann)


def test_vg_attributes_converter(tmp_path):
    src = _write(tmp_path, "attrs.json", [{"image_id": 1, "attributes": [
        {"x": 5, "y": 5, "w": 10, "h": 20, "names": ["car"], "attributes": ["red", "shiny"],
         "attribute_scores": [0.4, 0.7]},
        {"x": 0, "y": 0, "w": 4, "h": 4, "names": ["tree"]}]}])
    out = str(tmp_path / "a.json")
    convert.main(["vg-attributes", "--input", src, "--images", _write(tmp_path, "ann.json", COCO_ANN),
                  "--output", out])
    boxes = load_attributes(out)["a.jpg"]
    assert [(b.box, b.cls, b.attribute, b.score) for b in boxes] == [((5.0, 5.0, 15.0, 25.0), "car", "shiny", 0.7)]


def test_scene_graph_converters(tmp_path):
    dicts = _write(tmp_path, "dicts.json", {"idx_to_label": {"1": "man", "2": "horse"},
                                            "idx_to_predicate": {"5": "riding"}})
    sgb = _write(tmp_path, "sgb.json", [{"image": "a.jpg", "boxes": [list(range(4)), [0, 0, 50, 60]],
                                         "labels": [1, 2], "rel_pairs": [[0, 1], [1, 1]], "rel_labels": [5, "near"],
                                         "rel_scores": [0.8, 0.9]}])
    out = str(tmp_path / "sg.json")
    convert.main(["scene-graphs", "--input", sgb, "--dicts", dicts, "--output", out])
    t = load_scene_graphs(out)["a.jpg"]
    assert [(x.subject_cls, x.predicate, x.object_cls, x.subject_id, x.object_id) for x in t] == [
        ("man", "riding", "horse", 0, 1), ("horse", "near", "horse", 1, 1)]
    reltr = _write(tmp_path, "reltr.json", [{"image": "b.jpg", "triplets": [
        {"subject": "dog", "subject_box": [0, 0, 9, 9], "predicate": "on", "object": "bed",
         "object_box": [0, 0, 20, 20], "score": 0.6}]}])
    convert.main(["scene-graphs", "--input", reltr, "--output", out])
    assert load_scene_graphs(out)["b.jpg"][0].object_box == (0.0, 0.0, 20.0, 20.0)
    no_dicts = _write(tmp_path, "nd.json", [{"image": "a.jpg", "boxes": [[0, 0, 1, 1]], "labels": [1],
                                             "rel_pairs": [], "rel_labels": [], "rel_scores": []}])
    with pytest.raises(InputFormatError, match=r"nd\.json: \[0\]\.labels\[0\]: label 1 is an index"):
        convert.scene_graphs(no_dicts)


def test_coco_captions_converter(tmp_path):
    res = _write(tmp_path, "caps.json", [{"image_id": 2, "caption": "a dog"}, {"image_id": 2, "caption": "a pup"}])
    out = str(tmp_path / "c.json")
    convert.main(["coco-captions", "--results", res, "--annotations", _write(tmp_path, "ann.json", COCO_ANN),
                  "--output", out])
    assert load_captions(out) == {"b.jpg": ["a dog", "a pup"]}


# ---------------------------------------------------------------- input validation

@pytest.mark.parametrize("record, message", [
    ({"image": "a.jpg", "width": 10, "height": 10, "objects": [{"box": [5, 0, 1, 1], "class": "x", "score": 1}]},
     r"images\[0\]\.objects\[0\]: 'box' \[5, 0, 1, 1\] is inverted"),
    ({"image": "a.jpg", "width": 0, "height": 10, "objects": []}, r"images\[0\]: 'width' must be positive"),
    ({"image": "a.jpg", "width": 10, "height": 10, "objects": [{"box": [0, 0, 1, 1], "score": 1}]},
     r"images\[0\]\.objects\[0\]: missing key 'class'"),
])
def test_malformed_detections_name_file_and_record(tmp_path, record, message):
    path = _write(tmp_path, "det.json", {"images": [record]})
    with pytest.raises(InputFormatError, match=r"det\.json: " + message):
        load_detections(path)


def test_repeated_image_and_missing_images_list(tmp_path):
    rec = {"image": "a.jpg", "captions": []}
    with pytest.raises(InputFormatError, match=r"images\[1\]: image 'a.jpg' is listed twice"):
        load_captions(_write(tmp_path, "c.json", {"images": [rec, rec]}))
    with pytest.raises(InputFormatError, match='expected a JSON object with an "images" list'):
        load_captions(_write(tmp_path, "d.json", [rec]))


def test_cli_entry_turns_bad_input_into_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: merge.main(["--dataset", "unc", "--folder", str(tmp_path / "missing")]))
    assert exit_info.value.code == 1  # bad input (a usage error is 2)
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: folder not found"
