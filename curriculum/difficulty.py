"""Source difficulty for MSA (docs/curriculum.md): the mean number of entities per expression, easy (few) to hard
(many).

"Entity" is defined once, by the pseudo-label module (``pseudo_label_generation_module.lexicon``): the
non-overlapping object-class terms of an expression (class names and their synonyms, singular or plural, longest
first), with its built-in COCO, person and clothing words. A class vocabulary (``load_lexicon``) adds names: a JSON
list of class names, a JSON ``{class: [words naming it]}`` object such as the upstream ``synonyms.json``, or a text
file with one name per line. The order is the one ``python -m pseudo_label_generation_module.stats`` reports as
``msa_order`` ("left red car" = 1 < "man near horse" = 2 < "a man with a dog riding a horse" = 3).
"""
from __future__ import annotations

import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from pseudo_label_generation_module.lexicon import Lexicon
from pseudo_label_generation_module.stats import msa_order


def load_lexicon(path: Optional[str] = None) -> Lexicon:
    """The entity lexicon: the built-in words, plus the class names (and synonyms) of the vocabulary file ``path``
    (a JSON list, a JSON {class: [words]} object or a text file with one name per line). ``ValueError`` naming the
    file when it holds no usable names."""
    if path is None:
        return Lexicon()
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        bad = [k for k, v in data.items() if not isinstance(v, list) or not all(isinstance(w, str) for w in v)]
        if bad:
            raise ValueError(f"vocabulary {path}: class {bad[0]!r} must map to a list of words")
        lexicon = Lexicon(classes=[str(k) for k in data], synonyms={str(k): v for k, v in data.items()})
    elif isinstance(data, list) and all(isinstance(t, str) for t in data):
        lexicon = Lexicon(classes=data)
    else:
        raise ValueError(f"vocabulary {path}: expected a list of class names or a {{class: [words]}} object")
    if not lexicon.classes:
        raise ValueError(f"vocabulary {path}: no class names")
    return lexicon


def entity_counter(lexicon: Optional[Lexicon] = None) -> Callable[[str], int]:
    """The number of entities of an expression under ``lexicon`` (default: the built-in one)."""
    return (lexicon or Lexicon()).count_entities


def mean_entities(expressions: Sequence[str], counter: Callable[[str], int]) -> float:
    """Mean entity count over ``expressions``."""
    if not expressions:
        raise ValueError("mean_entities: no expressions")
    return sum(counter(e) for e in expressions) / len(expressions)


def order_sources(expressions: Dict[str, Sequence[str]],
                  counter: Callable[[str], int]) -> List[Tuple[str, float]]:
    """Sources sorted easy to hard: ``[(name, mean entities per expression)]``; ties keep the given order."""
    means = {name: mean_entities(list(texts), counter) for name, texts in expressions.items()}
    return [(name, means[name]) for name in msa_order({n: {"mean_entities": m} for n, m in means.items()})]
