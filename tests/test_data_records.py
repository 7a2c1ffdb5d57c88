"""Sample tuple layouts, box conventions and the record <-> tuple round trip of every dataset."""
import dataclasses
import math

import pytest

from datasets import DATASETS, BadSampleError, record_to_tuple, tuple_to_record
from datasets.records import LAYOUTS, PLACEHOLDER, GroundingRecord, check_split_name, parse_records

COCO_STYLE = ["unc", "unc+", "gref", "gref_umd", "synthetic"]


def sample_for(dataset, box, query="The Man on the LEFT"):
    """A tuple in ``dataset``'s official layout with realistic extras."""
    if dataset == "flickr":
        return ("1000092795.jpg", box, query)
    return ("COCO_train2014_000000000839.jpg", "482127.pth", box, query, [("r1", ["man"]), ("r8", ["left"])])


def test_splits_follow_the_spec():
    assert DATASETS["referit"] == ("train", "val", "trainval", "test", "train_pseudo")
    for name in ("unc", "unc+", "synthetic"):
        assert DATASETS[name] == ("train", "val", "trainval", "testA", "testB", "train_pseudo")
    assert DATASETS["gref"] == ("train", "val", "train_pseudo")
    assert DATASETS["gref_umd"] == ("train", "val", "test", "train_pseudo")
    assert DATASETS["flickr"] == ("train", "val", "test", "train_pseudo")


@pytest.mark.parametrize("dataset", COCO_STYLE)
def test_coco_style_xywh_truncated_before_conversion(dataset):
    # int() per coordinate first: x2 = int(10.7) + int(20.6) = 30, not int(31.3) = 31.
    record = tuple_to_record(sample_for(dataset, [10.7, 5.9, 20.6, 40.5]), dataset, 3)
    assert record.box_xyxy == (10.0, 5.0, 30.0, 45.0)
    assert record.image == "COCO_train2014_000000000839.jpg"
    assert record.query == "The Man on the LEFT"  # raw text, case kept
    assert record.index == 3 and record.dataset == dataset


@pytest.mark.parametrize("dataset", ["referit", "flickr"])
def test_referit_and_flickr_store_xyxy(dataset):
    record = tuple_to_record(sample_for(dataset, [10.7, 5.9, 30.99, 45.2]), dataset, 0)
    assert record.box_xyxy == (10.0, 5.0, 30.0, 45.0)
    assert LAYOUTS[dataset].box_format == "xyxy"


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_unchanged_record_writes_back_the_original_tuple(dataset):
    original = sample_for(dataset, [303.58, 69.03, 393.29, 425.79])
    record = tuple_to_record(original, dataset, 0)
    back = record_to_tuple(record, dataset)
    assert back == original and type(back) is tuple
    assert back[LAYOUTS[dataset].box_field] is original[LAYOUTS[dataset].box_field]  # float values kept as stored


@pytest.mark.parametrize("dataset", ["unc", "referit", "flickr"])
def test_changed_record_is_written_in_the_dataset_convention(dataset):
    record = tuple_to_record(sample_for(dataset, [10, 20, 50, 60]), dataset, 0)
    changed = dataclasses.replace(record, box_xyxy=(1.0, 2.0, 11.0, 22.0), query="new query")
    out = record_to_tuple(changed)
    layout = LAYOUTS[dataset]
    expected = [1.0, 2.0, 10.0, 20.0] if layout.box_format == "xywh" else [1.0, 2.0, 11.0, 22.0]
    assert out[layout.box_field] == expected
    assert out[layout.query_field] == "new query"
    assert out[1 if dataset != "flickr" else 0] == record.source[1 if dataset != "flickr" else 0]  # extras kept
    assert tuple_to_record(out, dataset, 0).box_xyxy == (1.0, 2.0, 11.0, 22.0)


def test_new_record_without_source_gets_placeholder_extras():
    record = GroundingRecord(image="a.jpg", box_xyxy=(0.0, 0.0, 4.0, 8.0), query="red circle", dataset="unc")
    assert record_to_tuple(record) == ("a.jpg", PLACEHOLDER, [0.0, 0.0, 4.0, 8.0], "red circle", PLACEHOLDER)


@pytest.mark.parametrize("sample, reason", [
    ("not a tuple", "expected a tuple"),
    (("a.jpg", "x", [0, 0, 5, 5], "q"), "expected 5 fields"),
    (("a.jpg", "x", [0, 0, 5, math.nan], "q", "y"), "non-finite"),
    (("a.jpg", "x", [0, 0, math.inf, 5], "q", "y"), "non-finite"),
    (("a.jpg", "x", [0, 0, 0.9, 5], "q", "y"), "zero area"),  # w truncates to 0
    (("a.jpg", "x", [0, 0, 5], "q", "y"), "4 numbers"),
    (("a.jpg", "x", "0 0 5 5", "q", "y"), "string"),
    (("a.jpg", "x", [0, 0, "w", 5], "q", "y"), "4 numbers"),
    (("a.jpg", "x", [0, 0, 5, 5], None, "y"), "query must be a string"),
    (("a.jpg", "x", [0, 0, 5, 5], "  ", "y"), "empty query"),
    ((None, "x", [0, 0, 5, 5], "q", "y"), "image file name"),
])
def test_bad_samples_name_index_and_reason(sample, reason):
    with pytest.raises(BadSampleError, match=reason) as info:
        tuple_to_record(sample, "unc", 17)
    assert info.value.index == 17 and "sample 17" in str(info.value)


def test_xyxy_box_with_x2_before_x1_is_bad():
    with pytest.raises(BadSampleError, match="zero area"):
        tuple_to_record(("a.jpg", [30, 5, 10, 45], "q"), "flickr", 2)


def test_parse_records_keeps_split_positions():
    samples = [sample_for("unc", [0, 0, 5, 5]), ("broken",), sample_for("unc", [1, 1, 5, 5])]
    records, bad = parse_records(samples, "unc")
    assert [r.index for r in records] == [0, 2]
    assert [e.index for e in bad] == [1]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid datasets: referit, unc, unc\\+, gref, gref_umd, flickr, synthetic"):
        tuple_to_record(sample_for("unc", [0, 0, 5, 5]), "refcoco", 0)
    with pytest.raises(ValueError, match="valid splits: train, val, train_pseudo"):
        check_split_name("gref", "test")
