"""Caption pseudo-language labels: a caption grounded on the box of its subject
(docs/method.md#pseudo-language-label-sources).

Subject parser (``parse_subject``; rules, no NLP dependency). On the lower-cased word tokens:

1. Framing openers are skipped: "there is/are", "this/it/here is", and "<picture|photo|image|view|close up|...>
   of" within the first words ("a black and white photo of a dog" -> "a dog").
2. Determiners ("a", "an", "the", "this", possessives) are skipped; quantities ("two", "several", "many", ...)
   and collective nouns followed by "of" ("a group of", "a herd of", "a pair of") are skipped and make the
   subject plural.
3. The noun phrase is the run of words up to the first boundary: a preposition, conjunction, relative pronoun,
   determiner, auxiliary or common finite verb ("sits", "holds", ...), always; or a verb-looking word ("-ing" /
   "-ed", minus a list of nouns such as "building", "ceiling") once the run already holds a known object word, so
   "a parked car" and "a red striped cat" keep their modifiers.
4. The head noun is the known object term ending last in the run, longest first ("hot dog", "young man" -> "man");
   without a known term it is the run's last word. The other words are modifiers; a plural head ("dogs", "men")
   makes the subject plural.
5. Spatial cues come from the modifiers ("left", "top", "big" = front, "small" = behind, ...) and from a locative
   phrase right after the noun phrase ("the man on the left ...", "a dog in the front").

Grounding (``ground_subject``) over the image's objects after the template's tiny-box, duplicate and attribute
rules: the head's candidate classes (the term itself, synonyms.json, the built-in table: "guy" -> man -> person,
plural forms) are tried in order and the first class present in the image wins. One object of that class: its
box. Several: a singular subject is resolved by a spatial cue (the template's spatial words among that class) or
an attribute word that singles out one object; otherwise, and for a plural subject, the caption is dropped as
``ambiguous``. Other drops: ``no_subject`` (no noun phrase), ``unmatched`` (no object of the head's classes),
``duplicate`` (same caption twice for an image). The counts are written to the statistics file.
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tqdm import tqdm

from pseudo_label_generation_module import _cli
from pseudo_label_generation_module.inputs import (AttributeBox, ImageDetections, class_names, load_attributes,
                                                   load_captions, load_detections)
from pseudo_label_generation_module.lexicon import Lexicon, is_plural, words
from pseudo_label_generation_module.samples import is_trainable_box, make_sample
from pseudo_label_generation_module.template import (SceneObject, TemplateConfig, assign_spatial_words,
                                                     prepare_objects)
from utils.cli import run_cli

DETERMINERS = frozenset("a an the this that its his her their our my your one".split())
QUANTITIES = frozenset("two three four five six seven eight nine ten several many multiple few some both all "
                       "numerous various lots".split())
COLLECTIVES = frozenset("group couple pair bunch herd flock crowd team lot lots number set row line variety "
                        "collection fleet pack swarm pile stack".split())
FRAMING = frozenset("picture photo photograph image view closeup close-up shot snapshot scene".split())
_OPENERS = (("there", "is"), ("there", "are"), ("this", "is"), ("it", "is"), ("here", "is"), ("here", "are"))
BOUNDARIES = frozenset("""
in on at with near next by of under over above below behind beside besides between inside outside across along
around into onto through against toward towards beyond within without from to for up down off out underneath
atop among amongst like during after before than
and or but nor that which who whose where when while as
is are was were be been being am has have had do does did can could will would may might must shall should
sits stands holds rides eats looks lies lays walks plays flies waits poses wears carries runs jumps grazes
drinks watches hangs rests swings throws catches hits talks smiles sleeps surfs skis skates parks drives leans
reads uses takes makes shows contains covers seems appears stares sit stand hold ride eat look lie lay walk
play fly wait pose wear carry run jump graze drink watch hang rest swing throw catch hit talk smile sleep
""".split())
ING_ED_NOUNS = frozenset("building ceiling clothing painting ring king wing string thing something nothing evening "
                         "morning railing icing awning sibling pudding stuffing frosting topping dressing bedding "
                         "siding swing sling speed steed breed weed seed feed reed bread".split())
SPATIAL_CUES = {
    "left": "left", "leftmost": "left", "right": "right", "rightmost": "right", "middle": "middle",
    "center": "middle", "centre": "middle", "top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom",
    "front": "front", "foreground": "front", "big": "front", "bigger": "front", "biggest": "front",
    "large": "front", "larger": "front", "largest": "front", "behind": "behind", "back": "behind",
    "background": "behind", "small": "behind", "smaller": "behind", "smallest": "behind",
}
"""Word -> the template spatial word it asks for."""


@dataclass(frozen=True)
class Subject:
    """The subject noun phrase of a caption."""
    head: str
    modifiers: Tuple[str, ...]
    plural: bool
    spatial: Tuple[str, ...]


def normalize_caption(caption: str) -> str:
    """Lower-cased, single-spaced, without surrounding punctuation."""
    return " ".join(caption.lower().split()).strip(" .!?;:,\"'")


def _verb_like(word: str) -> bool:
    if word in ING_ED_NOUNS:
        return False
    return (word.endswith("ing") and len(word) > 4) or (word.endswith("ed") and len(word) > 4)


def _skip_openers(tokens: List[str]) -> int:
    for opener in _OPENERS:
        if tuple(tokens[:len(opener)]) == opener:
            return len(opener)
    for i in range(min(len(tokens) - 1, 6)):
        if tokens[i + 1] == "of" and (tokens[i] in FRAMING or (tokens[i] == "up" and tokens[i - 1:i] == ["close"])):
            return i + 2
    return 0


def parse_subject(caption: str, lexicon: Lexicon) -> Optional[Subject]:
    """The subject noun phrase of ``caption`` (rules in the module docstring), or None when there is none."""
    tokens = words(caption)
    i = _skip_openers(tokens)
    plural = False
    while i < len(tokens):
        if tokens[i] in DETERMINERS:
            i += 1
        elif tokens[i] in QUANTITIES:
            plural, i = True, i + 1
        elif tokens[i] in COLLECTIVES and i + 1 < len(tokens) and tokens[i + 1] == "of":
            plural, i = True, i + 2
        else:
            break
    run: List[str] = []
    while i < len(tokens):
        w = tokens[i]
        if run and (w in BOUNDARIES or w in DETERMINERS
                    or (_verb_like(w) and lexicon.rightmost_term(run) is not None)):
            break
        if not run and w in BOUNDARIES:
            return None
        run.append(w)
        i += 1
    if not run:
        return None
    hit = lexicon.rightmost_term(run)
    start, end = (hit[0], hit[1]) if hit else (len(run) - 1, len(run))
    head = " ".join(run[start:end])
    modifiers = tuple(run[:start] + run[end:])
    after = [w for w in tokens[i:i + 4] if w not in DETERMINERS and w != "far"]
    trailing = after[1:2] if after[:1] and after[0] in ("on", "in", "at", "to") else []
    spatial = tuple(dict.fromkeys(SPATIAL_CUES[w] for w in list(modifiers) + trailing if w in SPATIAL_CUES))
    return Subject(head, modifiers, plural or is_plural(run[end - 1]), spatial)


def ground_subject(subject: Optional[Subject], objects: Sequence[SceneObject], width: float, height: float,
                   lexicon: Lexicon, config: TemplateConfig) -> Tuple[Optional[SceneObject], str]:
    """``(object, "matched")`` or ``(None, reason)`` with reason ``no_subject``, ``unmatched`` or ``ambiguous``."""
    if subject is None:
        return None, "no_subject"
    present = {o.cls for o in objects}
    classes = [c for c in lexicon.classes_for(subject.head) if c in present]
    if not classes:
        return None, "unmatched"
    candidates = [o for o in objects if o.cls == classes[0]]
    if len(candidates) == 1:
        return candidates[0], "matched"
    if subject.plural:
        return None, "ambiguous"
    placed = assign_spatial_words(candidates, width, height, config)
    for cue in subject.spatial:
        hits = [k for k, o in enumerate(placed) if cue in o.spatial]
        if len(hits) == 1:
            return candidates[hits[0]], "matched"
    for word in subject.modifiers:
        hits = [o for o in candidates if o.attribute == word]
        if len(hits) == 1:
            return hits[0], "matched"
    return None, "ambiguous"


def generate(captions: Mapping[str, Sequence[str]], detections: Sequence[ImageDetections],
             attributes: Mapping[str, Sequence[AttributeBox]], dataset: str, lexicon: Lexicon,
             config: TemplateConfig = TemplateConfig(), progress: bool = False) -> Tuple[List[tuple], Dict[str, int]]:
    """Caption pseudo samples of ``dataset`` (official layout) and the kept/dropped counts by reason."""
    by_image = {d.image: d for d in detections}
    counts: Counter = Counter()
    samples: List[tuple] = []
    for image, texts in tqdm(captions.items(), desc="caption", unit="img", disable=not progress):
        counts["images"] += 1
        record = by_image.get(image)
        if record is None:
            counts["images_without_detections"] += 1
            record = ImageDetections(image, 1.0, 1.0, [])
        people, clothing, things = prepare_objects(record, attributes.get(image, ()), config)
        objects = people + clothing + things
        seen = set()
        for text in texts:
            counts["captions"] += 1
            phrase = normalize_caption(text)
            if phrase in seen:
                counts["dropped_duplicate"] += 1
                continue
            seen.add(phrase)
            obj, reason = ground_subject(parse_subject(phrase, lexicon), objects, record.width, record.height,
                                         lexicon, config)
            if obj is None:
                counts[f"dropped_{reason}"] += 1
            elif not is_trainable_box(dataset, obj.box):
                counts["untrainable_boxes"] += 1
            else:
                samples.append(make_sample(dataset, image, obj.box, phrase))
    counts["samples"] = len(samples)
    return samples, dict(counts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m pseudo_label_generation_module.caption",
                                description="Caption pseudo-language labels: captions grounded on their subject.")
    p.add_argument("--captions", required=True, help="captions.json (docs/upstream_formats.md)")
    p.add_argument("--detections", required=True, help="detections.json: the boxes subjects are matched to")
    p.add_argument("--attributes", help="attributes.json (optional: attribute words then disambiguate)")
    _cli.add_common_arguments(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    args = build_parser().parse_args(argv)
    _cli.check_outputs(args)
    detections = load_detections(args.detections)
    classes = class_names(detections)
    lexicon = _cli.lexicon_from_args(args, classes)
    attributes = load_attributes(args.attributes) if args.attributes else {}
    samples, counts = generate(load_captions(args.captions), detections, attributes, args.dataset, lexicon,
                               progress=True)
    _cli.write_outputs(args, "caption", samples, counts, classes)
    dropped = {k[len("dropped_"):]: v for k, v in counts.items() if k.startswith("dropped_")}
    print(f"caption: dropped {sum(dropped.values())} of {counts.get('captions', 0)} captions: {dropped}")
    return counts


if __name__ == "__main__":
    run_cli(main)
