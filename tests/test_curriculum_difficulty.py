"""MSA source ordering: entities per expression, with a class vocabulary or the content-word approximation."""
import json

import pytest

from curriculum.difficulty import entity_counter, load_vocabulary, mean_entities, order_sources


def test_vocabulary_counts_class_nouns_with_plurals_and_multiword_names(tmp_path):
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps({"person": ["man", "woman"], "traffic light": [], "bus": ["coach"]}))
    vocab = load_vocabulary(str(path))
    assert "traffic light" in vocab and "woman" in vocab
    count = entity_counter(vocab)
    assert count("left man") == 1
    assert count("The woman next to two buses near a traffic  light") == 3
    assert count("a manly policeman") == 0  # whole words only
    (tmp_path / "names.txt").write_text("car\ndog\n")
    assert entity_counter(load_vocabulary(str(tmp_path / "names.txt")))("a dog chasing cars") == 2


def test_content_word_approximation_orders_template_relation_caption():
    count = entity_counter()
    assert count("left red car") == 1
    assert count("man near horse") == 2
    assert count("a man riding a horse on the beach") == 4
    ranked = order_sources({"caption": ["a man riding a horse on the beach"], "template": ["left red car", "big dog"],
                            "relation": ["man near horse"]}, count)
    assert ranked == [("template", 1.0), ("relation", 2.0), ("caption", 4.0)]
    assert mean_entities(["left red car", "man near horse"], count) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        mean_entities([], count)
