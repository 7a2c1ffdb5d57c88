"""MSA source ordering: entities per expression, as the pseudo-label module's lexicon counts them."""
import json

import pytest

from curriculum.difficulty import entity_counter, load_lexicon, mean_entities, order_sources


def test_vocabulary_counts_class_nouns_with_plurals_and_multiword_names(tmp_path):
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps({"person": ["man", "woman"], "traffic light": [], "bus": ["coach"]}))
    lexicon = load_lexicon(str(path))
    assert "traffic light" in lexicon.terms and "woman" in lexicon.terms
    count = entity_counter(lexicon)
    assert count("left man") == 1
    assert count("The woman next to two buses near a traffic  light") == 3
    assert count("a manly policeman") == 0  # whole words only
    (tmp_path / "names.txt").write_text("rocket\nzeppelin\n")
    assert entity_counter(load_lexicon(str(tmp_path / "names.txt")))("a rocket chasing zeppelins") == 2
    assert entity_counter()("a rocket chasing zeppelins") == 0  # not built-in words


def test_builtin_lexicon_orders_template_relation_caption():
    count = entity_counter()
    assert count("left red car") == 1
    assert count("man near horse") == 2
    assert count("a man with a dog riding a horse near a car") == 4
    ranked = order_sources({"caption": ["a man with a dog riding a horse near a car"],
                            "template": ["left red car", "big dog"], "relation": ["man near horse"]}, count)
    assert ranked == [("template", 1.0), ("relation", 2.0), ("caption", 4.0)]
    assert mean_entities(["left red car", "man near horse"], count) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        mean_entities([], count)
