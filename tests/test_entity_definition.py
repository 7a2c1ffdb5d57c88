""""Entity" is defined once: the MSA order of curriculum.difficulty is the pseudo-label statistics' order."""
import json

import pytest
import torch

from curriculum.difficulty import entity_counter, load_lexicon, order_sources
from pseudo_label_generation_module.lexicon import Lexicon
from pseudo_label_generation_module.stats import source_statistics

EXPRESSIONS = {
    "caption": ["a woman in a red dress holding an umbrella next to two dogs", "the man on a bike near the bus"],
    "template": ["left red car", "man in white shirt", "middle giraffe"],
    "relation": ["cup on the table", "man riding horse", "people near the traffic lights"],
}


def test_counts_equal_the_pseudo_label_lexicon():
    count, lexicon = entity_counter(), Lexicon()
    for texts in EXPRESSIONS.values():
        for text in texts:
            assert count(text) == lexicon.count_entities(text), text
    assert count("man in white shirt") == 2 and count("two traffic lights near men") == 2


def test_order_equals_the_statistics_msa_order(tmp_path):
    paths = []
    for name, texts in EXPRESSIONS.items():
        path = tmp_path / f"{name}.pth"
        torch.save([(f"{name}{i}.jpg", "x", [0.0, 0.0, 5.0, 5.0], t, "y") for i, t in enumerate(texts)], path)
        paths.append((name, str(path)))
    stats = source_statistics(paths, "unc", Lexicon())
    ranked = order_sources(EXPRESSIONS, entity_counter())
    assert [name for name, _ in ranked] == stats["msa_order"] == ["template", "relation", "caption"]
    for name, mean in ranked:
        assert mean == pytest.approx(stats["sources"][name]["mean_entities"])


def test_vocabulary_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"person": "man"}))
    with pytest.raises(ValueError, match="bad.json.*'person'"):
        load_lexicon(str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt: no class names"):
        load_lexicon(str(empty))
    number = tmp_path / "number.json"
    number.write_text("3")
    with pytest.raises(ValueError, match="number.json: expected a list"):
        load_lexicon(str(number))
