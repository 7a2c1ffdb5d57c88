"""Relation and caption pseudo labels: extraction, filtering, subject parsing and grounding with counted drops."""
import json
from collections import Counter

import pytest
import torch

from pseudo_label_generation_module import caption, relation
from pseudo_label_generation_module.caption import ground_subject, parse_subject
from pseudo_label_generation_module.inputs import AttributeBox, Detection, ImageDetections, Triplet
from pseudo_label_generation_module.lexicon import Lexicon, is_plural, singular
from pseudo_label_generation_module.relation import RelationConfig, image_relations
from pseudo_label_generation_module.template import SceneObject, TemplateConfig

MAN, HORSE, HAT = (10.0, 10.0, 110.0, 310.0), (100.0, 150.0, 400.0, 400.0), (40.0, 10.0, 80.0, 40.0)


def triplet(s, p, o, score=0.9, sbox=MAN, obox=HORSE, sid=None, oid=None):
    return Triplet(s, sbox, p, o, obox, score, sid, oid)


# ---------------------------------------------------------------- relation

def test_relation_expression_is_grounded_on_the_subject_box():
    assert image_relations([triplet("man", "riding", "horse")], RelationConfig()) == [(MAN, "man riding horse")]


def test_low_confidence_and_self_referential_triplets_are_dropped_and_counted():
    counts = Counter()
    triplets = [triplet("man", "riding", "horse", 0.1),                          # below 0.2
                triplet("man", "near", "man", 0.9, MAN, MAN),                  # same box
                triplet("man", "has", "man", 0.9, MAN, (12, 10, 112, 300)),    # IoU 0.95
                triplet("man", "near", "man", 0.9, MAN, HORSE, sid=3, oid=3),  # same instance id
                triplet("man", "wearing", "hat", 0.5, MAN, HAT)]               # hat inside man: IoU 0.04, kept
    assert image_relations(triplets, RelationConfig(), counts) == [(MAN, "man wearing hat")]
    assert (counts["low_confidence"], counts["self_referential"]) == (1, 3)


def test_identical_expressions_keep_the_most_confident_grounding_and_cap_per_image():
    other = (300.0, 10.0, 400.0, 300.0)
    triplets = [triplet("man", "riding", "horse", 0.5), triplet("man", "riding", "horse", 0.8, other),
                triplet("man", "near", "horse", 0.6)]
    assert image_relations(triplets, RelationConfig()) == [(other, "man riding horse"), (MAN, "man near horse")]
    assert image_relations(triplets, RelationConfig(per_image=1)) == [(other, "man riding horse")]


def test_relation_generate_layout_and_negative_coordinates():
    graphs = {"a.jpg": [triplet("Man", "On", "horse", 0.9, (-3.0, 5.0, 50.0, 60.0))]}
    samples, counts = relation.generate(graphs, "unc")
    assert samples == [("a.jpg", "useless placeholder", [0.0, 5.0, 50.0, 55.0], "man on horse", "useless placeholder")]
    assert counts["samples"] == 1 and counts["triplets"] == 1


def test_relation_cli(tmp_path):
    data = {"images": [{"image": "a.jpg", "triplets": [
        {"subject": {"class": "man", "box": list(MAN)}, "predicate": "riding",
         "object": {"class": "horse", "box": list(HORSE)}, "score": 0.9},
        {"subject": {"class": "man", "box": list(MAN)}, "predicate": "near",
         "object": {"class": "horse", "box": list(HORSE)}, "score": 0.05}]}]}
    (tmp_path / "sg.json").write_text(json.dumps(data))
    out = tmp_path / "rel.pth"
    relation.main(["--scene_graphs", str(tmp_path / "sg.json"), "--dataset", "flickr", "--output", str(out)])
    assert torch.load(out, weights_only=True) == [("a.jpg", list(MAN), "man riding horse")]
    stats = json.loads((tmp_path / "rel_stats.json").read_text())
    assert stats["generation"]["low_confidence"] == 1
    assert stats["statistics"]["mean_entities"] == 2.0


# ---------------------------------------------------------------- caption parsing

LEX = Lexicon(["man", "dog", "horse", "car", "person", "bicycle", "circle"], {"circle": ["circle", "ball", "disc"]})


@pytest.mark.parametrize("text, head, plural, modifiers", [
    ("A young man riding a horse.", "man", False, ("young",)),
    ("the man is standing", "man", False, ()),
    ("two dogs playing in the grass", "dogs", True, ()),
    ("a group of people standing around", "people", True, ()),
    ("there is a red parked car on the street", "car", False, ("red", "parked")),
    ("a close up of a dog", "dog", False, ()),
    ("a black and white photo of a horse", "horse", False, ()),
    ("a hot dog with ketchup", "hot dog", False, ()),
    ("men walking down the street", "men", True, ()),
    ("a kitchen with a stove", "kitchen", False, ()),
])
def test_subject_noun_phrase(text, head, plural, modifiers):
    s = parse_subject(caption.normalize_caption(text), LEX)
    assert (s.head, s.plural, s.modifiers) == (head, plural, modifiers)


def test_subject_spatial_cues_and_missing_subject():
    assert parse_subject("the dog on the left is barking", LEX).spatial == ("left",)
    assert parse_subject("the big dog", LEX).spatial == ("front",)
    assert parse_subject("on the table", LEX) is None


def test_plural_and_synonym_words():
    assert [singular(w) for w in ("ladies", "boxes", "horses", "buses", "shoes", "men", "people", "bus")] == [
        "lady", "box", "horse", "bus", "shoe", "man", "person", "bus"]
    assert is_plural("dogs") and not is_plural("glass")
    assert LEX.classes_for("guys")[:3] == ["guys", "guy", "man"]
    assert "circle" in LEX.classes_for("balls")


# ---------------------------------------------------------------- caption grounding

def objects(*specs):
    return [SceneObject(cls, box, 0.9, attribute=attr) for cls, box, attr in specs]


def ground(text, objs, lexicon=LEX):
    return ground_subject(parse_subject(text, lexicon), objs, 640, 480, lexicon, TemplateConfig())


def test_single_object_of_the_class_gives_its_box_with_synonyms_and_plurals():
    scene = objects(("person", MAN, None), ("bicycle", HORSE, None), ("circle", HAT, None))
    assert ground("a guy riding a bike", scene) == (scene[0], "matched")
    assert ground("a bike leaning on a wall", scene) == (scene[1], "matched")
    assert ground("a red ball on the grass", scene) == (scene[2], "matched")
    assert ground("two balls", scene) == (scene[2], "matched")


def test_first_present_class_wins_for_person_words():
    scene = objects(("man", MAN, None), ("person", HORSE, None))
    assert ground("a young man surfing", scene) == (scene[0], "matched")
    assert ground("a person surfing", scene) == (scene[1], "matched")


def test_ambiguous_and_unmatched_subjects():
    left, right = (0.0, 0.0, 100.0, 100.0), (300.0, 0.0, 400.0, 100.0)
    scene = objects(("dog", left, "black"), ("dog", right, "white"))
    assert ground("a dog running", scene) == (None, "ambiguous")
    assert ground("two dogs playing", scene) == (None, "ambiguous")
    assert ground("a cat sleeping", scene) == (None, "unmatched")
    assert ground("on the table", scene) == (None, "no_subject")
    assert ground("the dog on the right", scene) == (scene[1], "matched")
    assert ground("a left dog", scene) == (scene[0], "matched")
    assert ground("a black dog", scene) == (scene[0], "matched")


def test_caption_generate_counts_every_drop_reason():
    dets = [ImageDetections("a.jpg", 640, 480, [Detection((0, 0, 100, 100), "dog", 0.9),
                                                Detection((300, 0, 400, 100), "dog", 0.8),
                                                Detection((100, 200, 300, 400), "car", 0.9)])]
    caps = {"a.jpg": ["A red car parked on the street.", "a red car parked on the street", "a dog barking",
                      "the dog on the left", "a cat", "on the grass"],
            "b.jpg": ["a dog"]}
    attrs = {"a.jpg": [AttributeBox((0, 0, 100, 100), "dog", "brown", 0.9)]}
    samples, counts = caption.generate(caps, dets, attrs, "unc", Lexicon(["dog", "car"]))
    assert samples == [
        ("a.jpg", "useless placeholder", [100.0, 200.0, 200.0, 200.0], "a red car parked on the street",
         "useless placeholder"),
        ("a.jpg", "useless placeholder", [0.0, 0.0, 100.0, 100.0], "the dog on the left", "useless placeholder")]
    assert {k: v for k, v in counts.items() if k.startswith("dropped_")} == {
        "dropped_duplicate": 1, "dropped_ambiguous": 1, "dropped_unmatched": 2, "dropped_no_subject": 1}
    assert counts["captions"] == 7 and counts["images_without_detections"] == 1


def test_caption_cli_with_synonyms(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"images": [{"image": "s.jpg", "width": 256, "height": 256, "objects": [
        {"box": [10, 10, 90, 90], "class": "circle", "score": 0.9}]}]}))
    (tmp_path / "c.json").write_text(json.dumps({"images": [{"image": "s.jpg", "captions": [
        "a red disc next to a square", "a triangle"]}]}))
    (tmp_path / "syn.json").write_text(json.dumps({"circle": ["circle", "disc"]}))
    out = tmp_path / "cap.pth"
    counts = caption.main(["--captions", str(tmp_path / "c.json"), "--detections", str(tmp_path / "d.json"),
                           "--synonyms", str(tmp_path / "syn.json"), "--dataset", "synthetic", "--output", str(out)])
    assert torch.load(out, weights_only=True) == [("s.jpg", "useless placeholder", [10.0, 10.0, 80.0, 80.0],
                                                   "a red disc next to a square", "useless placeholder")]
    assert counts["dropped_unmatched"] == 1
    stats = json.loads((tmp_path / "cap_stats.json").read_text())
    assert stats["generation"]["dropped_unmatched"] == 1 and stats["statistics"]["samples"] == 1
