"""Source difficulty for MSA: the mean number of entities per expression (SPEC §4), easy (few) to hard (many).

An entity is an object-class noun of the expression. With a class vocabulary (``load_vocabulary``: a JSON list of
class names, a JSON ``{class: [words naming it]}`` object such as the upstream ``synonyms.json``, or a text file
with one name per line), the entities are the vocabulary terms found in the lower-cased expression: longest terms
first, whole words only, non-overlapping, a plural ``s``/``es`` accepted. Without a vocabulary, an approximation
counts the content words: alphabetic words outside a closed list of function, spatial, colour and size words
("left red car" -> 1, "man riding horse" -> 3). Either way ``template`` < ``relation`` < ``caption`` in practice.
"""
from __future__ import annotations

import json
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

_WORD = re.compile(r"[a-z]+")

_NON_ENTITY_WORDS = frozenset("""
a an the this that these those some any each every all both another other one two three four five several many
in on at of with to from by for near next behind under underneath above below over between beside besides across
along inside outside around into onto through against toward towards beyond within without up down off out
front back and or but not nor so then than as while where who whom whose which what when it its he she his her
him they them their there here is are was were be been being has have had do does did can could will would
left right top bottom middle center centre upper lower far closest nearest farthest furthest close first second
third last side corner half part edge
red blue green yellow black white gray grey brown orange pink purple dark light colored coloured striped
big small large little tall short long huge tiny wide narrow old young new
""".split())


def load_vocabulary(path: str) -> List[str]:
    """Class names (and their synonyms) from a JSON list, a JSON {class: [words]} object or a text file."""
    with open(path) as fh:
        text = fh.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [line for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        terms = [str(k) for k in data] + [str(w) for words in data.values() for w in words]
    elif isinstance(data, list):
        terms = [str(t) for t in data]
    else:
        raise ValueError(f"vocabulary {path}: expected a list of class names or a {{class: [words]}} object")
    terms = sorted({t.strip().lower() for t in terms if t.strip()})
    if not terms:
        raise ValueError(f"vocabulary {path}: no class names")
    return terms


def entity_counter(vocabulary: Optional[Iterable[str]] = None) -> Callable[[str], int]:
    """A function giving the number of entities of an expression (see the module docstring)."""
    if vocabulary is None:
        return lambda text: sum(1 for w in _WORD.findall(text.lower()) if w not in _NON_ENTITY_WORDS)
    terms = sorted({t.lower().strip() for t in vocabulary if t.strip()}, key=lambda t: (-len(t), t))
    if not terms:
        raise ValueError("entity vocabulary is empty")
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in t.split()) for t in terms)
    pattern = re.compile(rf"\b(?:{alternatives})(?:e?s)?\b")
    return lambda text: len(pattern.findall(text.lower()))


def mean_entities(expressions: Sequence[str], counter: Callable[[str], int]) -> float:
    """Mean entity count over ``expressions``."""
    if not expressions:
        raise ValueError("mean_entities: no expressions")
    return sum(counter(e) for e in expressions) / len(expressions)


def order_sources(expressions: Dict[str, Sequence[str]],
                  counter: Callable[[str], int]) -> List[Tuple[str, float]]:
    """Sources sorted easy to hard: ``[(name, mean entities per expression)]``; ties keep the given order."""
    scored = [(name, mean_entities(list(texts), counter)) for name, texts in expressions.items()]
    return sorted(scored, key=lambda item: item[1])
