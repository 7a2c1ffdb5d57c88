"""GroundingDataset / build_dataset on small split files and images written in tmp_path."""
import os

import clip
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from datasets import DATASETS, BadSampleError, DataCache, ImageLoadError, build_dataset, canvas_to_original
from datasets.grounding import tokenize_queries
from datasets.records import IMAGE_DIRS, LAYOUTS
from utils.args import parse_args
from utils.box_ops import cxcywh_to_xyxy
from utils.errors import InputError, UsageError

IMSIZE = 64


def sample(dataset, image, box_xyxy, query):
    """A tuple in ``dataset``'s official layout for an xyxy pixel box."""
    x1, y1, x2, y2 = box_xyxy
    box = [x1, y1, x2 - x1, y2 - y1] if LAYOUTS[dataset].box_format == "xywh" else [x1, y1, x2, y2]
    return (image, box, query) if dataset == "flickr" else (image, f"{image}.pth", box, query, "useless placeholder")


def write_split(split_root, dataset, split, samples):
    os.makedirs(os.path.join(split_root, dataset), exist_ok=True)
    torch.save(samples, os.path.join(split_root, dataset, f"{dataset}_{split}.pth"))


def write_image(data_root, dataset, name, size=(80, 60), box=(10, 20, 50, 50)):
    folder = os.path.join(data_root, IMAGE_DIRS[dataset])
    os.makedirs(folder, exist_ok=True)
    img = Image.new("RGB", size, (30, 140, 90))
    img.paste((220, 20, 20), box)
    img.save(os.path.join(folder, name))


def make_dataset(root, dataset, splits):
    """Write ``splits`` ({split: [(image, box_xyxy, query), ...]}) and one image per distinct image name."""
    data_root, split_root = os.path.join(root, "images"), os.path.join(root, "splits")
    for split, rows in splits.items():
        write_split(split_root, dataset, split, [sample(dataset, *row) for row in rows])
        for image, box, _ in rows:
            write_image(data_root, dataset, image, box=tuple(int(v) for v in box))
    return data_root, split_root


def make_args(root, dataset, *extra, script="train"):
    return parse_args(script, ["--dataset", dataset, "--data_root", os.path.join(root, "images"),
                               "--split_root", os.path.join(root, "splits"), "--imsize", str(IMSIZE), *extra])


ROWS = [("a.jpg", (10, 20, 50, 50), "The RED block"), ("b.png", (0, 0, 30, 40), "red thing on the left")]


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_dataset_builds_items_that_default_collate_batches(tmp_path, dataset):
    make_dataset(tmp_path, dataset, {"val": ROWS})
    ds = build_dataset("val", make_args(tmp_path, dataset))
    assert len(ds) == 2 and ds.records[1].box_xyxy == (0.0, 0.0, 30.0, 40.0)
    item = ds[0]
    assert set(item) == {"img", "img_mask", "text", "box", "index", "transform"}
    assert item["img"].shape == (3, IMSIZE, IMSIZE) and item["img"].dtype == torch.float32
    assert item["img_mask"].shape == (IMSIZE, IMSIZE) and item["img_mask"].dtype == torch.bool
    assert item["text"].shape == (77,) and item["text"].dtype == torch.int64
    assert item["box"].shape == (4,) and item["box"].dtype == torch.float32
    assert item["transform"].dtype == torch.float32 and item["index"] == 0
    batch = default_collate([ds[0], ds[1]])
    assert batch["img"].shape == (2, 3, IMSIZE, IMSIZE) and batch["index"].tolist() == [0, 1]
    pixels = canvas_to_original(cxcywh_to_xyxy(batch["box"]) * IMSIZE, batch["transform"])
    assert torch.allclose(pixels, torch.tensor([r.box_xyxy for r in ds.records]), atol=1e-3)


def test_query_is_prompted_then_lower_cased_then_clip_tokenised(tmp_path):
    make_dataset(tmp_path, "unc", {"val": ROWS})
    prompt = "Find the region that corresponds to the description {pseudo_query}"
    ds = build_dataset("val", make_args(tmp_path, "unc", "--prompt", prompt, "--max_query_len", "20"))
    expected = clip.tokenize("find the region that corresponds to the description the red block", context_length=20)
    assert torch.equal(ds[0]["text"], expected[0].long())
    assert ds.records[0].query == "The RED block"  # the record keeps the raw text
    plain = build_dataset("val", make_args(tmp_path, "unc", script="eval"))  # eval default prompt: {pseudo_query}
    assert torch.equal(plain[0]["text"], clip.tokenize("the red block")[0].long())


def test_prompt_without_placeholder_is_refused(tmp_path):
    make_dataset(tmp_path, "unc", {"val": ROWS})
    with pytest.raises(ValueError, match="pseudo_query"):
        build_dataset("val", make_args(tmp_path, "unc", "--prompt", "find it"))


def test_long_queries_are_truncated_counted_and_reported_once(tmp_path, capsys):
    long_query = " ".join(["red"] * 100)
    rows = [ROWS[0], ("c.jpg", (1, 1, 20, 20), long_query), ("d.jpg", (1, 1, 20, 20), long_query + " block")]
    make_dataset(tmp_path, "unc", {"val": rows})
    ds = build_dataset("val", make_args(tmp_path, "unc"))
    lines = [line for line in capsys.readouterr().out.splitlines() if "truncated" in line]
    assert len(lines) == 1 and "2 unc val queries" in lines[0] and "first: sample 1" in lines[0]
    text = ds[1]["text"]
    assert text[-1] == clip.tokenize("")[0].max()  # truncated: the end-of-text token closes the context
    assert len(ds[2]["text"]) == 77


def test_a_query_that_exactly_fills_the_context_is_not_counted(tmp_path, capsys):
    rows = [("a.jpg", (1, 1, 20, 20), " ".join(["red"] * 18))]  # 18 words + start + end = 20 tokens
    make_dataset(tmp_path, "unc", {"val": rows})
    ds = build_dataset("val", make_args(tmp_path, "unc", "--max_query_len", "20"))
    assert "truncated" not in capsys.readouterr().out and ds[0]["text"][-1] != 0


def test_trainval_is_train_then_val_except_referit(tmp_path):
    make_dataset(tmp_path, "unc", {"train": ROWS[:1], "val": ROWS[1:]})
    ds = build_dataset("trainval", make_args(tmp_path, "unc"), train=False)
    assert [r.image for r in ds.records] == ["a.jpg", "b.png"] and [r.index for r in ds.records] == [0, 1]
    make_dataset(tmp_path, "referit", {"train": ROWS, "val": ROWS})
    with pytest.raises(InputError, match="referit_trainval.pth"):
        build_dataset("trainval", make_args(tmp_path, "referit"))


def test_train_split_uses_train_transforms_reproducibly(tmp_path):
    make_dataset(tmp_path, "unc", {"train": ROWS})
    args = make_args(tmp_path, "unc", "--aug_translate", "--aug_scale")
    ds = build_dataset("train", args)
    assert ds.transform.random and not build_dataset("train", args, train=False).transform.random

    def epoch(number, workers):
        ds.set_epoch(number)
        return [b["transform"] for b in DataLoader(ds, batch_size=1, num_workers=workers)]

    # The augmentation of a sample is a function of (seed, epoch, index): the same for any worker count.
    first = epoch(0, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(0, 2)))
    draws = {tuple(epoch(e, 0)[0][0].tolist()) for e in range(8)}
    assert len(draws) > 1  # each epoch draws new augmentation


def test_missing_split_file_names_the_path_and_present_splits(tmp_path):
    make_dataset(tmp_path, "unc", {"train": ROWS, "val": ROWS})
    with pytest.raises(InputError) as info:
        build_dataset("testA", make_args(tmp_path, "unc"))
    message = str(info.value)
    assert os.path.join("splits", "unc", "unc_testA.pth") in message and "train, val" in message
    with pytest.raises(InputError, match="no folder .*gref.* holds: unc"):
        build_dataset("val", make_args(tmp_path, "gref"))


def test_unknown_split_or_dataset_lists_the_valid_ones(tmp_path):
    make_dataset(tmp_path, "unc", {"val": ROWS})
    with pytest.raises(UsageError, match="valid splits: train, val, trainval, testA, testB, train_pseudo"):
        build_dataset("test", make_args(tmp_path, "unc"))
    with pytest.raises(UsageError, match="valid datasets: referit, unc"):
        build_dataset("val", make_args(tmp_path, "refcoco"))


def test_missing_images_are_found_up_front(tmp_path):
    data_root, _ = make_dataset(tmp_path, "unc", {"val": ROWS + [("c.jpg", (1, 1, 9, 9), "q")]})
    folder = os.path.join(data_root, IMAGE_DIRS["unc"])
    os.remove(os.path.join(folder, "b.png"))
    os.remove(os.path.join(folder, "c.jpg"))
    with pytest.raises(InputError) as info:
        build_dataset("val", make_args(tmp_path, "unc"))
    message = str(info.value)
    assert "2 image file(s)" in message and "b.png (sample 1)" in message and "python -m datasets.check" in message


def test_image_lost_or_corrupt_after_construction_names_file_and_index(tmp_path):
    data_root, _ = make_dataset(tmp_path, "unc", {"val": ROWS})
    ds = build_dataset("val", make_args(tmp_path, "unc"))
    folder = os.path.join(data_root, IMAGE_DIRS["unc"])
    os.remove(os.path.join(folder, "b.png"))
    with pytest.raises(ImageLoadError, match="sample 1: image .*b.png does not exist"):
        ds[1]
    with open(os.path.join(folder, "a.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(ImageLoadError, match="sample 0: cannot read image .*a.jpg"):
        ds[0]


def test_grayscale_images_become_rgb(tmp_path):
    data_root, _ = make_dataset(tmp_path, "flickr", {"test": ROWS[:1]})
    Image.new("L", (80, 60), 128).save(os.path.join(data_root, IMAGE_DIRS["flickr"], "a.jpg"))
    assert build_dataset("test", make_args(tmp_path, "flickr"))[0]["img"].shape == (3, IMSIZE, IMSIZE)


def _with_bad_samples(tmp_path):
    make_dataset(tmp_path, "unc", {"train": ROWS, "val": ROWS})
    bad = [sample("unc", *ROWS[0]), ("a.jpg", "x", [0, 0, float("nan"), 4], "q", "y"),
           sample("unc", *ROWS[1]), ("a.jpg", [0, 0, 4, 4], "q"), ("a.jpg", "x", [5, 5, 0.5, 9], "q", "y")]
    for split in ("train", "val"):
        write_split(os.path.join(tmp_path, "splits"), "unc", split, bad)


def test_training_skips_bad_samples_with_one_line_and_keeps_split_indices(tmp_path, capsys):
    _with_bad_samples(tmp_path)
    ds = build_dataset("train", make_args(tmp_path, "unc"))
    out = capsys.readouterr().out
    assert "skipped 3 bad sample(s)" in out and "sample 1" in out
    assert len(ds) == 2 and [r.index for r in ds.records] == [0, 2] and ds[1]["index"] == 2
    assert ds.records_by_index[2].image == "b.png"


def test_evaluation_refuses_bad_samples_naming_first_and_count(tmp_path):
    _with_bad_samples(tmp_path)
    with pytest.raises(BadSampleError, match="unc sample 1: box has a non-finite value.*3 bad sample") as info:
        build_dataset("val", make_args(tmp_path, "unc", script="eval"))
    assert info.value.index == 1
    with pytest.raises(BadSampleError):
        build_dataset("train", make_args(tmp_path, "unc", "--no-skip_bad_samples"))


def test_split_files_load_with_weights_only(tmp_path):
    make_dataset(tmp_path, "unc", {"val": ROWS})
    torch.save([sample("unc", *ROWS[0]) + (slice(1),)], os.path.join(tmp_path, "splits", "unc", "unc_val.pth"))
    with pytest.raises(ValueError, match="weights_only=True"):
        build_dataset("val", make_args(tmp_path, "unc"))
    torch.save({"not": "a list"}, os.path.join(tmp_path, "splits", "unc", "unc_val.pth"))
    with pytest.raises(ValueError, match="must hold a list of samples"):
        build_dataset("val", make_args(tmp_path, "unc"))


def test_cache_images_decodes_each_file_once_and_changes_no_item(tmp_path, monkeypatch):
    rows = ROWS + [("a.jpg", (12, 22, 40, 50), "the red block again")]
    make_dataset(tmp_path, "unc", {"train": rows})
    extra = ("--aug_translate", "--aug_scale", "--aug_crop", "--aug_blur")  # every transform that copies the image
    plain = build_dataset("train", make_args(tmp_path, "unc", *extra))
    cached = build_dataset("train", make_args(tmp_path, "unc", *extra, "--cache_images"))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(os.path.basename(path)) or
                        real_open(path, *a, **k))
    for epoch in range(3):  # augmented differently each epoch, from the same decoded image
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(rows)):
            a, b = plain[i], cached[i]
            assert torch.equal(a["img"], b["img"]) and torch.equal(a["box"], b["box"])
            assert torch.equal(a["img_mask"], b["img_mask"])
    assert opened.count("a.jpg") == 3 * 2 + 1 and opened.count("b.png") == 3 + 1  # plain: every item; cached: once
    assert not parse_args("train", []).cache_images


def test_cache_images_without_augmentation_transforms_each_image_once_bit_for_bit(tmp_path, monkeypatch):
    rows = ROWS + [("a.jpg", (12, 22, 40, 50), "the red block again")]
    make_dataset(tmp_path, "unc", {"train": rows, "val": rows})
    cache = DataCache()  # shared by the data sets of one process, as the in-process launcher shares its own
    for split, train in (("train", True), ("val", False)):
        plain = build_dataset(split, make_args(tmp_path, "unc", "--no-aug_color"), train=train)
        cached = build_dataset(split, make_args(tmp_path, "unc", "--no-aug_color", "--cache_images"), train=train,
                               cache=cache)
        assert not cached.transform.random
        opened = []
        real_open = Image.open
        monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(os.path.basename(path)) or
                            real_open(path, *a, **k))
        for _ in range(2):
            for i in range(len(rows)):
                a, b = plain[i], cached[i]
                for key in ("img", "img_mask", "box", "transform", "text"):
                    assert torch.equal(a[key], b[key]), (split, i, key)
        item = cached[0]
        item["box"] = None  # an item is a fresh dict each time, even when it comes from the cache
        assert cached[0]["box"] is not None
        before = cached[0]["img"]
        # plain: every item of both passes; cached: each image once, shared by both samples on a.jpg, and by every
        # data set built with the same cache (the val set reuses the train set's canvases: the same images and imsize)
        once = 1 if split == "train" else 0
        assert opened.count("a.jpg") == 2 * 2 + once and opened.count("b.png") == 2 + once
        monkeypatch.undo()
    # a rewritten image is read again (the cached canvases are keyed by the file's size and modification time)
    path = plain.image_path(plain.records[0])
    assert plain.records[0].image == "a.jpg"
    stat = os.stat(path)
    Image.open(path).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    plain = build_dataset("val", make_args(tmp_path, "unc", "--no-aug_color"), train=False)
    cached = build_dataset("val", make_args(tmp_path, "unc", "--no-aug_color", "--cache_images"), train=False,
                           cache=cache)
    assert torch.equal(plain[0]["img"], cached[0]["img"]) and not torch.equal(plain[0]["img"], before)


def test_query_tokens_are_clip_tokenize_and_reused_across_data_sets(monkeypatch):
    texts = ["the red block", "a blue ring left of the red block", "the red block", "zebra " * 80]
    cache = DataCache()
    tokenized = []
    real_tokenize = clip.tokenize
    monkeypatch.setattr(clip, "tokenize", lambda t, **k: tokenized.append(list(t)) or real_tokenize(t, **k))
    for context in (77, 8, 77):  # the second 77 comes from the cache
        tokens, rows, long = tokenize_queries(texts, context, cache)
        assert torch.equal(tokens[rows], real_tokenize(texts, context_length=context, truncate=True).to(torch.int32))
        assert tokens.shape == (3, context)  # each distinct text once
        assert long == ([1, 3] if context == 8 else [3])
    assert tokenized == [list(dict.fromkeys(texts))] * 2  # each distinct text once per context length
