"""Unreadable images and boxes outside their image: the checker reports them, training skips out-of-image boxes with
a count, evaluation refuses them naming the sample, a truncated image stops a run with one line (DataLoader workers
included), and the relation generator clips or drops boxes beyond the image as the template generator does."""
import io
import json
import os
from collections import Counter

import pytest
import torch
from PIL import Image, ImageFile

from datasets import build_dataset, canvas_to_original
from datasets.check import check_dataset, main as check_main
from datasets.grounding import BoxOutsideImageError, ImageLoadError
from datasets.loader import build_loader
from datasets.records import IMAGE_DIRS
from pseudo_label_generation_module import caption, relation
from pseudo_label_generation_module.inputs import Detection, ImageDetections, Triplet
from pseudo_label_generation_module.lexicon import Lexicon
from pseudo_label_generation_module.relation import RelationConfig, image_relations
from test_data import ROWS, make_args, make_dataset, sample, write_split
from utils.box_ops import box_placement, cxcywh_to_xyxy

OUTSIDE = ("a.jpg", (500, 500, 550, 550), "far away")  # [500, 500, 50, 50] (xywh) on an 80x60 image
STICKS_OUT = ("b.png", (40, 30, 100, 90), "partly out")  # 80x60 image: clipped to (40, 30, 80, 60)


def truncated_jpeg(path, fraction=0.37):
    """Replace ``path`` by an 80x60 noise JPEG (about 9 KB: headers intact, so PIL opens and ``verify()``s it) cut to
    ``fraction`` of its bytes."""
    pixels = torch.randint(0, 256, (60, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    with open(path, "wb") as fh:
        fh.write(data[:int(len(data) * fraction)])


def one_line(message):
    assert "\n" not in message and "Traceback" not in message, message
    return message


def test_box_placement_rule():
    assert box_placement((10, 10, 50, 50), 64, 64) == "inside"
    assert box_placement((0, 0, 64, 64), 64, 64) == "inside"
    assert box_placement((40, 40, 80, 80), 64, 64) == "clipped"
    assert box_placement((500, 500, 550, 550), 64, 64) == "outside"
    assert box_placement((64, 10, 90, 20), 64, 64) == "outside"  # touches the border only: no area inside


def test_checker_decodes_images_fully_and_reports_a_truncated_jpeg(tmp_path, monkeypatch, capsys):
    data_root, split_root = make_dataset(tmp_path, "unc", {"val": ROWS})
    truncated_jpeg(os.path.join(data_root, IMAGE_DIRS["unc"], "a.jpg"))
    with Image.open(os.path.join(data_root, IMAGE_DIRS["unc"], "a.jpg")) as img:
        img.verify()  # what the checker used to rely on: it does not notice
    # Even where another library turned PIL's lenient decoding on, the checker decodes strictly.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    report = check_dataset("unc", data_root, split_root, verify_images=True)
    val = report["splits"]["val"]
    assert val["unreadable_images"] == 1 and val["unreadable_examples"][0].startswith("a.jpg: ")
    assert not report["ok"]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    assert check_main(["--dataset", "unc", "--data_root", data_root, "--split_root", split_root,
                       "--verify_images"]) == 1
    assert "val: unreadable image a.jpg" in capsys.readouterr().out


def unc_val_loader(tmp_path, workers):
    """The evaluation loader of the ``unc`` ``val`` split under ``tmp_path``, batches of 2, ``workers`` workers."""
    args = make_args(tmp_path, "unc", "--batch_size", "2", "--num_workers", str(workers), "--device", "cpu",
                     script="eval")
    return build_loader(build_dataset("val", args, train=False), args, train=False)


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_image_during_a_run_is_one_line_with_file_and_sample(tmp_path, workers):
    data_root, _ = make_dataset(tmp_path, "unc", {"val": ROWS})
    truncated_jpeg(os.path.join(data_root, IMAGE_DIRS["unc"], "a.jpg"))
    loader = unc_val_loader(tmp_path, workers)
    with pytest.raises(ImageLoadError) as info:
        list(loader)
    message = one_line(str(info.value))
    assert message.startswith("sample 0: cannot read image ") and "a.jpg: image file is truncated" in message


def test_checker_reports_boxes_outside_and_warns_about_clipped_ones(tmp_path, capsys):
    data_root, split_root = make_dataset(tmp_path, "unc", {"val": ROWS})
    write_split(split_root, "unc", "train", [sample("unc", *ROWS[0]), sample("unc", *OUTSIDE),
                                             sample("unc", *STICKS_OUT)])
    report = check_dataset("unc", data_root, split_root)
    train = report["splits"]["train"]
    assert (train["boxes_outside"], train["boxes_clipped"]) == (1, 1)
    assert train["outside_examples"] == ["sample 1: box [500.0, 500.0, 550.0, 550.0] (x1, y1, x2, y2) on the 80x60 "
                                         "image a.jpg"]
    assert not report["ok"] and report["problems"] == [f"train: 1 box(es) outside their image, first: "
                                                       f"{train['outside_examples'][0]}"]
    assert report["splits"]["val"]["status"] == "ok"
    assert check_main(["--dataset", "unc", "--data_root", data_root, "--split_root", split_root]) == 1
    out = capsys.readouterr().out
    assert "train: box outside its image: sample 1" in out and "1 box(es) stick out of their image" in out


def test_training_skips_boxes_outside_the_image_and_counts_them(tmp_path):
    data_root, split_root = make_dataset(tmp_path, "unc", {"val": ROWS})
    write_split(split_root, "unc", "train", [sample("unc", *ROWS[0]), sample("unc", *OUTSIDE),
                                             sample("unc", *STICKS_OUT)])
    train = build_dataset("train", make_args(tmp_path, "unc", "--no-aug_color"), train=True)
    items = [train[i] for i in range(len(train))]
    assert [it["index"] for it in items] == [0, 2, 2]  # sample 1's place goes to the next usable sample
    assert train.samples_outside_image() == [1]
    # The box that sticks out is used clipped to its 80x60 image: (40, 30, 80, 60) in original pixels.
    canvas_box = cxcywh_to_xyxy(items[2]["box"] * 64)
    assert canvas_to_original(canvas_box, items[2]["transform"]).tolist() == pytest.approx([40, 30, 80, 60], abs=1e-4)
    strict = build_dataset("train", make_args(tmp_path, "unc", "--no-skip_bad_samples"), train=True)
    with pytest.raises(BoxOutsideImageError, match="unc train sample 1: box"):
        strict[1]


@pytest.mark.parametrize("workers", [0, 1])
def test_evaluation_refuses_a_box_outside_the_image_naming_the_sample(tmp_path, workers):
    data_root, split_root = make_dataset(tmp_path, "unc", {"val": ROWS})
    write_split(split_root, "unc", "val", [sample("unc", *ROWS[0]), sample("unc", *OUTSIDE)])
    loader = unc_val_loader(tmp_path, workers)
    with pytest.raises(BoxOutsideImageError) as info:
        list(loader)
    message = one_line(str(info.value))
    assert message.startswith("unc val sample 1: box [500.0, 500.0, 550.0, 550.0] (x1, y1, x2, y2) lies outside "
                              "its 80x60 image ") and message.endswith("a.jpg")


def test_relation_generator_clips_or_drops_boxes_beyond_the_image(tmp_path):
    far = Triplet("man", (900.0, 900.0, 1000.0, 1000.0), "near", "dog", (0.0, 0.0, 10.0, 10.0), 0.9)
    partly = Triplet("dog", (40.0, -5.0, 90.0, 30.0), "near", "man", (0.0, 0.0, 10.0, 10.0), 0.9)
    counts = Counter()
    assert image_relations([far, partly], RelationConfig(), counts, size=(64, 64)) == [
        ((40.0, 0.0, 64.0, 30.0), "dog near man")]
    assert counts["outside_image"] == 1

    graphs = {"images": [{"image": "a.jpg", "triplets": [
        {"subject": {"class": "man", "box": [900, 900, 1000, 1000]}, "predicate": "near",
         "object": {"class": "dog", "box": [0, 0, 10, 10]}, "score": 0.9}]}]}
    detections = {"images": [{"image": "a.jpg", "width": 64, "height": 64, "objects": []}]}
    (tmp_path / "sg.json").write_text(json.dumps(graphs))
    (tmp_path / "det.json").write_text(json.dumps(detections))
    counts = relation.main(["--scene_graphs", str(tmp_path / "sg.json"), "--detections", str(tmp_path / "det.json"),
                            "--dataset", "unc", "--output", str(tmp_path / "r.pth")])
    assert counts["samples"] == 0 and counts["outside_image"] == 1


def test_caption_generator_grounds_on_boxes_clipped_to_the_image():
    """Caption subjects come from the template's prepared objects: clipped to the image, gone when wholly beyond."""
    detections = [ImageDetections("a.jpg", 64.0, 64.0, [Detection((40.0, -5.0, 90.0, 30.0), "dog", 0.9),
                                                        Detection((900.0, 900.0, 1000.0, 1000.0), "cat", 0.9)])]
    samples, counts = caption.generate({"a.jpg": ["a dog on the grass", "a cat"]}, detections, {}, "referit",
                                       Lexicon(["dog", "cat"]))
    assert samples == [("a.jpg", "useless placeholder", [40.0, 0.0, 64.0, 30.0], "a dog on the grass",
                        "useless placeholder")]
    assert counts["dropped_unmatched"] == 1
