"""Template pseudo labels (Pseudo-Q rules): each rule on a hand-made scene with a known answer."""
import dataclasses
import json
import os
from collections import Counter

import pytest
import torch

from pseudo_label_generation_module import template
from pseudo_label_generation_module.inputs import AttributeBox, Detection, ImageDetections
from pseudo_label_generation_module.template import (SceneObject, TemplateConfig, assign_spatial_words,
                                                     attach_attributes, attach_clothing, describe_image,
                                                     object_expressions, remove_duplicates, remove_tiny,
                                                     select_top)

CFG = TemplateConfig()


def obj(cls, box, score=0.9, **kw):
    return SceneObject(cls, tuple(float(v) for v in box), score, **kw)


def spatial(objects, width=640, height=480, config=CFG):
    return [o.spatial for o in assign_spatial_words(objects, width, height, config)]


def test_published_defaults():
    assert (CFG.min_area_fraction, CFG.dedup_iou, CFG.attr_iou, CFG.attr_score) == (0.015625, 0.4, 0.5, 0.3)
    assert (CFG.horizontal_px, CFG.behind_ratio, CFG.top_n, CFG.per_image) == (50.0, 0.4, 3, 10)
    assert {"hat", "shirt", "pants", "shoes"} <= set(CFG.clothing_classes)
    assert {"person", "man", "woman"} <= set(CFG.person_classes)


def test_tiny_boxes_are_removed_at_one_64th_of_the_image():
    # 100 x 100 image: the threshold is 156.25 px^2
    kept = remove_tiny([obj("cup", (0, 0, 12.5, 12.5)), obj("cup", (0, 0, 12, 13))], 100, 100, CFG.min_area_fraction)
    assert [o.box for o in kept] == [(0, 0, 12.5, 12.5)]


def test_tiny_rule_spares_clothing_and_counts_removals():
    rec = ImageDetections("a.jpg", 100, 100, [Detection((0, 0, 10, 10), "man", 0.9),
                                              Detection((0, 0, 10, 10), "shoe", 0.9),
                                              Detection((0, 0, 50, 50), "car", 0.9)])
    counts = Counter()
    people, clothing, things = template.prepare_objects(rec, [], CFG, counts)
    assert (people, [c.cls for c in clothing], [t.cls for t in things]) == ([], ["shoe"], ["car"])
    assert counts["tiny_removed"] == 1


def test_near_duplicates_keep_the_more_confident():
    a, b = obj("car", (0, 0, 100, 100), 0.8), obj("car", (10, 0, 110, 100), 0.9)  # IoU 0.82
    assert remove_duplicates([a, b], 0.4) == [b]
    # IoU exactly 0.4 is not a duplicate (the rule is IoU > 0.4)
    c, d = obj("car", (0, 0, 10, 10), 0.9), obj("car", (0, 0, 10, 4), 0.5)
    assert remove_duplicates([c, d], 0.4) == [c, d]


def test_duplicate_rule_is_pairwise_not_greedy_nms():
    # A overlaps B, B overlaps C, A and C apart: Pseudo-Q drops both B and C (C is beaten by B even though B goes)
    a, b, c = obj("dog", (0, 0, 100, 100), 0.9), obj("dog", (30, 0, 130, 100), 0.8), obj("dog", (60, 0, 160, 100), 0.7)
    assert remove_duplicates([a, b, c], 0.4) == [a]


def test_attribute_attached_only_for_same_class_high_iou_confident_attribute():
    car = obj("car", (0, 0, 100, 100))
    good = AttributeBox((5, 0, 100, 100), "car", "red", 0.6)               # IoU 0.95
    assert attach_attributes([car], [good], 0.5, 0.3)[0].attribute == "red"
    low_iou = AttributeBox((50, 0, 150, 100), "car", "red", 0.9)          # IoU 1/3
    low_score = AttributeBox((0, 0, 100, 100), "car", "red", 0.3)         # not > 0.3
    other_class = AttributeBox((0, 0, 100, 100), "bus", "red", 0.9)
    for attributed in (low_iou, low_score, other_class):
        assert attach_attributes([car], [attributed], 0.5, 0.3)[0].attribute is None


def test_attribute_from_the_best_overlapping_box():
    car = obj("car", (0, 0, 100, 100))
    near = AttributeBox((0, 0, 100, 90), "car", "blue", 0.4)               # IoU 0.9
    nearer = AttributeBox((0, 0, 100, 99), "car", "red", 0.35)             # IoU 0.99
    assert attach_attributes([car], [near, nearer], 0.5, 0.3)[0].attribute == "red"


def test_clothing_goes_to_the_person_containing_it_and_must_fit():
    left, right = obj("man", (0, 0, 100, 300), 0.9), obj("woman", (200, 0, 300, 300), 0.8)
    shirt = obj("shirt", (210, 60, 290, 150))
    hat_on_head = obj("hat", (20, 0, 80, 40))
    hat_at_feet = obj("hat", (20, 260, 80, 300))
    pants_on_legs = obj("pants", (220, 170, 280, 280))
    pants_on_chest = obj("pants", (20, 40, 80, 120))
    outside = obj("shoe", (90, 280, 150, 300))                            # 1/6 inside the man
    people = attach_clothing([left, right], [shirt, hat_on_head, hat_at_feet, pants_on_legs, pants_on_chest, outside],
                             CFG)
    assert [c.cls for c in people[0].clothing] == ["hat"]
    assert people[0].clothing[0].box == hat_on_head.box
    assert [c.cls for c in people[1].clothing] == ["shirt", "pants"]


def test_clothing_of_overlapping_people_goes_to_the_one_holding_most_of_it():
    a, b = obj("man", (0, 0, 100, 300), 0.9), obj("man", (40, 0, 200, 300), 0.5)
    shirt = obj("shirt", (50, 50, 150, 150))                               # 50% in a, 100% in b
    people = attach_clothing([a, b], [shirt], CFG)
    assert (people[0].clothing, [c.cls for c in people[1].clothing]) == ((), ["shirt"])


def test_left_right_need_centres_more_than_50px_apart():
    two = [obj("car", (0, 0, 40, 40)), obj("car", (100, 0, 140, 40))]
    assert spatial(two) == [("left",), ("right",)]
    close = [obj("car", (0, 0, 40, 40)), obj("car", (50, 0, 90, 40))]     # 50 px: not more than 50
    assert spatial(close) == [(), ()]


def test_three_in_a_row_get_left_middle_right():
    row = [obj("car", (300, 0, 340, 40)), obj("car", (0, 0, 40, 40)), obj("car", (600, 0, 640, 40))]
    assert spatial(row) == [("middle",), ("left",), ("right",)]


def test_more_than_three_use_image_quarters():
    # width 400: quarter lines at 100 and 300
    xs = [20, 90, 250, 380]
    cars = [obj("car", (x - 5, 0, x + 5, 10)) for x in xs]
    assert spatial(cars, width=400) == [("left",), ("left",), ("middle",), ("right",)]


def test_top_bottom_from_vertical_centres():
    stack = [obj("cup", (0, 300, 40, 340)), obj("cup", (0, 0, 40, 40))]
    assert spatial(stack) == [("bottom",), ("top",)]
    three = [obj("cup", (0, 0, 40, 40)), obj("cup", (0, 200, 40, 240)), obj("cup", (0, 440, 40, 480))]
    assert spatial(three) == [("top",), (), ("bottom",)]


def test_front_behind_from_area_ratio_to_the_largest():
    big, small = obj("dog", (0, 0, 100, 100)), obj("dog", (10, 10, 50, 50))   # ratio 0.16
    assert spatial([big, small]) == [("front",), ("behind",)]
    medium = obj("dog", (0, 0, 60, 80))                                         # ratio 0.48
    assert spatial([big, medium]) == [(), ()]


def test_spatial_words_only_compare_objects_of_the_same_class():
    scene = [obj("car", (0, 0, 40, 40)), obj("bus", (400, 0, 440, 40)), obj("car", (400, 300, 600, 480))]
    assert spatial(scene) == [("left", "top", "behind"), (), ("right", "bottom", "front")]


def test_top_n_people_first_then_by_confidence():
    people = [obj("man", (0, 0, 9, 9), 0.5), obj("woman", (0, 0, 9, 9), 0.7)]
    things = [obj("car", (0, 0, 9, 9), 0.99), obj("cup", (0, 0, 9, 9), 0.6), obj("dog", (0, 0, 9, 9), 0.95)]
    assert [o.cls for o in select_top(things + people, CFG)] == ["woman", "man", "car"]
    crowd = [obj("man", (0, 0, 9, 9), s) for s in (0.1, 0.9, 0.5, 0.7)]
    assert [o.score for o in select_top(crowd + things, CFG)] == [0.9, 0.7, 0.5]


def test_expression_forms_combine_noun_attribute_clothing_and_spatial_words():
    man = obj("man", (0, 0, 9, 9), clothing=(obj("shirt", (0, 0, 9, 9), attribute="white"),), spatial=("right",))
    phrases = object_expressions(man, CFG)
    for expected in ("man", "man in white shirt", "man in white shirt on the right", "right man in white shirt",
                     "man on the right", "right man", "man on the right in white shirt"):
        assert expected in phrases
    car = obj("car", (0, 0, 9, 9), attribute="red", spatial=("left",))
    assert object_expressions(car, CFG) == ["red car", "left red car", "red car on the left", "red car left"]
    assert object_expressions(obj("car", (0, 0, 9, 9), attribute="red"), CFG) == ["red car"]


def _busy_scene(image="a.jpg"):
    dets = [Detection((0, 100, 100, 400), "man", 0.9), Detection((300, 100, 420, 400), "man", 0.8),
            Detection((500, 100, 620, 400), "man", 0.85), Detection((20, 150, 80, 250), "shirt", 0.7),
            Detection((320, 150, 400, 250), "jacket", 0.7), Detection((310, 110, 360, 150), "hat", 0.6)]
    attrs = [AttributeBox((20, 150, 80, 250), "shirt", "white", 0.8),
             AttributeBox((320, 150, 400, 250), "jacket", "black", 0.8)]
    return ImageDetections(image, 640, 480, dets), attrs


def test_describe_image_runs_every_rule():
    rec, attrs = _busy_scene()
    selected = describe_image(rec, attrs, CFG)
    assert [(o.score, o.spatial) for o in selected] == [(0.9, ("left",)), (0.85, ("right",)), (0.8, ("middle",))]
    assert [c.noun_phrase for c in selected[0].clothing] == ["white shirt"]
    assert sorted(c.noun_phrase for c in selected[2].clothing) == ["black jacket", "hat"]


def test_at_most_per_image_expressions_deterministic_for_a_seed():
    rec, attrs = _busy_scene()
    first, counts = template.generate([rec], {"a.jpg": attrs}, "unc", CFG, seed=3)
    again, _ = template.generate([rec], {"a.jpg": attrs}, "unc", CFG, seed=3)
    other, _ = template.generate([rec], {"a.jpg": attrs}, "unc", CFG, seed=4)
    assert counts["candidates"] > 10 and len(first) == 10 == counts["samples"]
    assert first == again and first != other
    assert len({s[3] for s in first}) == 10


def test_an_images_labels_do_not_depend_on_the_other_images():
    rec_a, attrs_a = _busy_scene("a.jpg")
    rec_b, attrs_b = _busy_scene("b.jpg")
    alone, _ = template.generate([rec_b], {"b.jpg": attrs_b}, "unc", CFG, seed=7)
    both, _ = template.generate([rec_a, rec_b], {"a.jpg": attrs_a, "b.jpg": attrs_b}, "unc", CFG, seed=7)
    assert [s for s in both if s[0] == "b.jpg"] == alone


def test_samples_use_the_dataset_layout():
    rec = ImageDetections("a.jpg", 640, 480, [Detection((10, 20, 110, 220), "car", 0.9)])
    unc, _ = template.generate([rec], {}, "unc", CFG)
    flickr, _ = template.generate([rec], {}, "flickr", CFG)
    referit, _ = template.generate([rec], {}, "referit", CFG)
    assert unc == [("a.jpg", "useless placeholder", [10.0, 20.0, 100.0, 200.0], "car", "useless placeholder")]
    assert flickr == [("a.jpg", [10.0, 20.0, 110.0, 220.0], "car")]
    assert referit == [("a.jpg", "useless placeholder", [10.0, 20.0, 110.0, 220.0], "car", "useless placeholder")]


def test_boxes_are_clipped_to_the_image():
    rec = ImageDetections("a.jpg", 200, 100, [Detection((-20, -5, 150, 130), "car", 0.9)])
    samples, _ = template.generate([rec], {}, "referit", CFG)
    assert samples[0][2] == [0.0, 0.0, 150.0, 100.0]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="dedup_iou"):
        TemplateConfig(dedup_iou=1.5)
    with pytest.raises(ValueError, match="forms"):
        TemplateConfig(forms=("{s} thing",))
    with pytest.raises(ValueError, match="top_n"):
        dataclasses.replace(CFG, top_n=0)


def test_cli_writes_split_and_statistics(tmp_path):
    rec, attrs = _busy_scene()
    det = {"images": [{"image": rec.image, "width": rec.width, "height": rec.height,
                       "objects": [{"box": list(d.box), "class": d.cls, "score": d.score} for d in rec.objects]}]}
    att = {"images": [{"image": rec.image, "objects": [{"box": list(a.box), "class": a.cls, "attribute": a.attribute,
                                                        "score": a.score} for a in attrs]}]}
    (tmp_path / "d.json").write_text(json.dumps(det))
    (tmp_path / "a.json").write_text(json.dumps(att))
    out = tmp_path / "out" / "unc_template.pth"
    counts = template.main(["--detections", str(tmp_path / "d.json"), "--attributes", str(tmp_path / "a.json"),
                            "--dataset", "unc", "--output", str(out), "--seed", "3", "--per_image", "4",
                            "--person_classes", "man,woman"])
    samples = torch.load(out, weights_only=True)
    assert len(samples) == 4 == counts["samples"]
    assert samples == template.generate([rec], {rec.image: attrs}, "unc",
                                        dataclasses.replace(CFG, per_image=4, person_classes=("man", "woman")),
                                        seed=3)[0]
    stats = json.loads((tmp_path / "out" / "unc_template_stats.json").read_text())
    assert stats["statistics"]["samples"] == 4 and stats["generation"]["clothing_attached"] == 3
    assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")]


def test_cli_names_the_malformed_record(tmp_path):
    bad = {"images": [{"image": "a.jpg", "width": 10, "height": 10,
                       "objects": [{"box": [0, 0, 5, 5], "class": "car", "score": 0.5},
                                   {"box": [0, 0, 5], "class": "car", "score": 0.5}]}]}
    (tmp_path / "d.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"d\.json: images\[0\]\.objects\[1\]: 'box' must be 4 finite numbers"):
        template.main(["--detections", str(tmp_path / "d.json"), "--dataset", "unc",
                       "--output", str(tmp_path / "o.pth")])
