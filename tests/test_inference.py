"""inference.py on synthetic images with a tiny checkpoint: single image with a drawn picture, batch mode, bad input."""
import json
import os
import re

import pytest
from PIL import Image

import inference
from utils.errors import InputError, UsageError
from helpers_world import world_with_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    world = world_with_checkpoint(str(root), n_train_pseudo=4, n_val=4)
    images = os.path.join(world["data"], "synthetic", "images")
    return {"ckpt": world["ckpt"], "root": root,
            "images": [os.path.join(images, name) for name in sorted(os.listdir(images))[:3]]}


def base(setup):
    # No --imsize: the checkpoint's 64 is adopted.
    return ["--eval_model", setup["ckpt"], "--device", "cpu"]


def assert_inside(box, image_path):
    width, height = Image.open(image_path).size
    x1, y1, x2, y2 = box
    assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, (box, width, height)


def test_single_image_gives_a_box_inside_the_image_and_writes_the_picture(setup, tmp_path, capsys):
    image, out = setup["images"][0], str(tmp_path / "vis" / "boxed.png")
    results = inference.main([*base(setup), "--image", image, "--query", "the red circle on the left", "--out", out])
    assert len(results) == 1 and results[0]["image"] == image and results[0]["out"] == out
    assert_inside(results[0]["box_xyxy"], image)
    with Image.open(out) as drawn, Image.open(image) as original:
        assert drawn.format == "PNG" and drawn.size == original.size
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed == results


def test_batch_file_gives_one_result_per_entry_in_order(setup, tmp_path):
    items = [{"image": setup["images"][0], "query": "blue square"},
             {"image": setup["images"][1], "query": "the small triangle", "out": str(tmp_path / "b1.jpg")},
             {"image": setup["images"][2], "query": "green star at the top"},
             {"image": setup["images"][0], "query": "the big thing"}]
    batch = tmp_path / "items.json"
    batch.write_text(json.dumps(items))
    results = inference.main([*base(setup), "--batch_file", str(batch), "--batch_size", "3"])
    assert [(r["image"], r["query"]) for r in results] == [(i["image"], i["query"]) for i in items]
    for row in results:
        assert_inside(row["box_xyxy"], row["image"])
    assert [("out" in r) for r in results] == [False, True, False, False]
    with Image.open(tmp_path / "b1.jpg") as drawn:
        assert drawn.format == "JPEG"
    single = inference.main([*base(setup), "--image", items[2]["image"], "--query", items[2]["query"]])
    assert single[0]["box_xyxy"] == pytest.approx(results[2]["box_xyxy"], abs=0.05)


def test_missing_image_is_named_before_any_model_is_loaded(setup, tmp_path):
    missing = str(tmp_path / "nowhere.jpg")
    with pytest.raises(InputError, match=f"--image {re.escape(missing)}: no such image file"):
        inference.main([*base(setup), "--image", missing, "--query", "a cat"])
    batch = tmp_path / "items.json"
    batch.write_text(json.dumps([{"image": setup["images"][0], "query": "a"}, {"image": missing, "query": "b"}]))
    with pytest.raises(InputError, match=rf"items.json: item 1: image {re.escape(missing)} does not exist"):
        inference.main([*base(setup), "--batch_file", str(batch)])
    with pytest.raises(UsageError, match="--out .*boxed.xyz: unknown picture file extension"):
        inference.main([*base(setup), "--image", setup["images"][0], "--query", "a", "--out",
                        str(tmp_path / "boxed.xyz")])


def test_queries_that_cannot_be_grounded_are_reported_and_the_good_items_answered(setup, tmp_path, capsys):
    """A non-string or whitespace-only query in a batch: one line each, the other items still answered, exit 1."""
    items = [{"image": setup["images"][0], "query": "blue square"}, {"image": setup["images"][1], "query": 7},
             {"image": setup["images"][2], "query": "   "}]
    batch = tmp_path / "items.json"
    batch.write_text(json.dumps(items))
    with pytest.raises(InputError, match="2 of 3 batch items not answered"):
        inference.main([*base(setup), "--batch_file", str(batch)])
    out, err = capsys.readouterr()
    answered = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [row["query"] for row in answered] == ["blue square"]
    assert f"skipped: --batch_file {batch}: item 1: 'query' must be a string, got int 7" in err.splitlines()
    assert f"skipped: --batch_file {batch}: item 2: 'query' '   ' is empty or only whitespace" in err.splitlines()
    with pytest.raises(UsageError, match="--query: '  ' is empty or only whitespace"):
        inference.main([*base(setup), "--image", setup["images"][0], "--query", "  "])


def test_a_directory_as_eval_model_is_called_a_directory(setup, tmp_path):
    with pytest.raises(InputError, match=f"--eval_model {re.escape(str(tmp_path))}: is a directory"):
        inference.main(["--eval_model", str(tmp_path), "--device", "cpu", "--image", setup["images"][0],
                        "--query", "a"])
