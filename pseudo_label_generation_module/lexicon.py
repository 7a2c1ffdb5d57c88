"""Object-class words: plurals, synonyms, and the entity count of an expression.

A ``Lexicon`` knows the *terms* that name object classes: the class names it is given (e.g. every class of a
detections.json), the words of an optional synonyms.json (``{class: [words naming it]}``), and a small built-in
table for common COCO / Visual Genome words (person words such as man/guy/woman/lady/boy/girl/people, and everyday
synonyms such as bike/bicycle, puppy/dog, couch/sofa) plus the 80 COCO class names and common clothing words. A
term may have several words ("traffic light"); its last word may be plural ("traffic lights", "men", "ladies").

Entity (the MSA difficulty measure, docs/method.md#reliability-and-the-self-paced-curriculum): a maximal noun phrase
that names an object, counted as the number of non-overlapping known terms in the expression, matched left to right,
longest term first. Examples: "man in white shirt" = 2 (man, shirt), "left red car" = 1, "cup on the table" = 2.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")

_IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "people": "person", "children": "child", "feet": "foot", "teeth": "tooth",
    "mice": "mouse", "geese": "goose", "oxen": "ox", "knives": "knife", "wives": "wife", "leaves": "leaf",
    "shelves": "shelf", "wolves": "wolf", "halves": "half", "loaves": "loaf", "scarves": "scarf",
    "calves": "calf", "buses": "bus", "tomatoes": "tomato", "potatoes": "potato", "skis": "ski",
}
_INVARIANT = frozenset({"sheep", "fish", "deer", "series", "species", "this"})

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
"""The 80 COCO detection class names."""

CLOTHING_WORDS = (
    "hat", "cap", "helmet", "beanie", "hood", "shirt", "t-shirt", "jacket", "coat", "sweater", "hoodie", "vest",
    "dress", "uniform", "jersey", "suit", "pants", "jeans", "shorts", "skirt", "trousers", "shoe", "boot",
    "sneaker", "sandal", "sock", "glove", "scarf", "glasses", "sunglasses", "goggles",
)
"""Clothing words known to every lexicon built with ``builtin=True``."""

BUILTIN_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    "person": ("person", "people", "man", "woman"),
    "people": ("people", "person", "men", "women"),
    "man": ("man", "person", "guy", "men", "people"),
    "guy": ("guy", "man", "person"),
    "gentleman": ("man", "person"),
    "woman": ("woman", "lady", "person"),
    "lady": ("lady", "woman", "person"),
    "boy": ("boy", "kid", "child", "person"),
    "girl": ("girl", "kid", "child", "person"),
    "child": ("child", "kid", "boy", "girl", "person"),
    "kid": ("kid", "child", "boy", "girl", "person"),
    "baby": ("baby", "child", "kid", "person"),
    "toddler": ("toddler", "child", "kid", "person"),
    "adult": ("person",),
    "player": ("player", "man", "person"),
    "skier": ("skier", "person"),
    "surfer": ("person",),
    "skateboarder": ("person",),
    "snowboarder": ("person",),
    "rider": ("person",),
    "bike": ("bike", "bicycle", "motorcycle"),
    "bicycle": ("bicycle", "bike"),
    "motorbike": ("motorcycle", "bike"),
    "motorcycle": ("motorcycle", "bike"),
    "plane": ("airplane", "plane"),
    "airplane": ("airplane", "plane"),
    "jet": ("airplane", "plane"),
    "automobile": ("car",),
    "ship": ("boat",),
    "puppy": ("dog",),
    "kitten": ("cat",),
    "kitty": ("cat",),
    "pony": ("horse",),
    "cattle": ("cow",),
    "couch": ("couch", "sofa"),
    "sofa": ("sofa", "couch"),
    "television": ("tv", "television"),
    "tv": ("tv", "television"),
    "phone": ("phone", "cell phone"),
    "cellphone": ("cell phone", "phone"),
    "smartphone": ("cell phone", "phone"),
    "computer": ("laptop", "computer"),
    "doughnut": ("donut",),
    "ball": ("ball", "sports ball"),
    "hydrant": ("fire hydrant",),
    "racket": ("racket", "tennis racket"),
    "racquet": ("racket", "tennis racket"),
    "glass": ("glass", "wine glass", "cup"),
    "mug": ("cup",),
    "table": ("table", "dining table"),
    "teddy": ("teddy bear",),
    "purse": ("handbag", "bag"),
    "fridge": ("refrigerator",),
    "plant": ("plant", "potted plant"),
}
"""Word (singular) -> class names it may refer to, most specific first."""


def words(text: str) -> List[str]:
    """Lower-cased word tokens of ``text`` (letters/digits, inner hyphens and apostrophes kept)."""
    return _WORD.findall(text.lower())


def singular(word: str) -> str:
    """A small rule-based singular form: irregular table, ``-ies`` -> ``-y``, ``-sses/-ches/-shes/-xes`` drop
    ``es``, any other final ``s`` is dropped (not in ``-ss``, ``-us``, ``-is``)."""
    w = word.lower()
    if w in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[w]
    if w in _INVARIANT or len(w) <= 3 or not w.endswith("s"):
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "ches", "shes", "xes")):
        return w[:-2]
    if w.endswith(("ss", "us", "is")):
        return w
    return w[:-1]


def is_plural(word: str) -> bool:
    """True when ``singular`` changes the word (``people`` and ``men`` are plural, ``bus`` is not)."""
    return singular(word) != word.lower()


class Lexicon:
    """The object-class terms of a dataset (see the module docstring).

    ``classes``: class names (e.g. a detector's); ``synonyms``: ``{class: [words naming it]}``; ``builtin``:
    include ``BUILTIN_SYNONYMS`` and ``COCO_CLASSES``.
    """

    def __init__(self, classes: Iterable[str] = (), synonyms: Optional[Mapping[str, Sequence[str]]] = None,
                 builtin: bool = True):
        self.classes = sorted({_norm(c) for c in classes if _norm(c)})
        self._named_by: Dict[str, List[str]] = {}
        for cls, names in (synonyms or {}).items():
            for name in names:
                self._add(_norm(name), _norm(cls))
        self.builtin = builtin
        terms = set(self.classes) | set(self._named_by) | {c for cs in self._named_by.values() for c in cs}
        if builtin:
            terms |= set(BUILTIN_SYNONYMS) | {c for cs in BUILTIN_SYNONYMS.values() for c in cs} | set(COCO_CLASSES)
            terms |= {_norm(w) for w in CLOTHING_WORDS}
        self.terms = frozenset(t for t in terms if t)
        self.max_words = max((len(t.split()) for t in self.terms), default=1)
        self._entities: Dict[str, Tuple[str, ...]] = {}
        """``entities`` per text already seen (the terms never change after construction; sources repeat texts)."""

    def _add(self, word: str, cls: str) -> None:
        if word and cls and cls not in self._named_by.setdefault(word, []):
            self._named_by[word].append(cls)

    def term(self, tokens: Sequence[str]) -> Optional[str]:
        """The known term spelled by ``tokens`` (its last word possibly plural), or None."""
        if not tokens:
            return None
        raw = " ".join(tokens)
        if raw in self.terms:
            return raw
        sing = " ".join(list(tokens[:-1]) + [singular(tokens[-1])])
        return sing if sing in self.terms else None

    def longest_term_at(self, tokens: Sequence[str], start: int) -> Optional[Tuple[int, str]]:
        """``(end, term)`` of the longest known term starting at ``tokens[start]`` (``end`` exclusive)."""
        for n in range(min(self.max_words, len(tokens) - start), 0, -1):
            term = self.term(tokens[start:start + n])
            if term is not None:
                return start + n, term
        return None

    def rightmost_term(self, tokens: Sequence[str]) -> Optional[Tuple[int, int, str]]:
        """``(start, end, term)`` of the known term ending last in ``tokens`` (longest such term), or None."""
        for end in range(len(tokens), 0, -1):
            for start in range(max(0, end - self.max_words), end):
                term = self.term(tokens[start:end])
                if term is not None:
                    return start, end, term
        return None

    def entities(self, text: str) -> List[str]:
        """The object-class terms of ``text``, left to right, longest first, non-overlapping."""
        return list(self._entity_terms(text))

    def count_entities(self, text: str) -> int:
        """Number of entities of an expression (see the module docstring)."""
        return len(self._entity_terms(text))

    def _entity_terms(self, text: str) -> Tuple[str, ...]:
        found = self._entities.get(text)
        if found is None:
            tokens, terms, i = words(text), [], 0
            while i < len(tokens):
                hit = self.longest_term_at(tokens, i)
                if hit is None:
                    i += 1
                else:
                    i = hit[0]
                    terms.append(hit[1])
            found = self._entities[text] = tuple(terms)
        return found

    def classes_for(self, term: str) -> List[str]:
        """Class names ``term`` may refer to, most specific first: the term itself, the synonyms.json classes that
        it names, the built-in table's; then the same for its singular form. Empty for an empty term."""
        if not words(term):
            return []
        tokens = words(term)
        out: List[str] = []
        for form in dict.fromkeys([" ".join(tokens), " ".join(tokens[:-1] + [singular(tokens[-1])])]):
            out += [form] + self._named_by.get(form, [])
            if self.builtin:
                out += list(BUILTIN_SYNONYMS.get(form, ()))
        return list(dict.fromkeys(out))


def _norm(text: str) -> str:
    return " ".join(words(str(text)))
