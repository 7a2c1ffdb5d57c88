"""The synthetic referring world (data set ``synthetic``): a seeded generator of a complete grounding data set in the
official layout, for the demo.

Scenes hold a few coloured shapes of three visually distinct sizes on textured backgrounds. Shapes come in two
category families (``round``: circle, ring, ellipse, semicircle; ``angular``: square, triangle, star, cross), so
``testA`` (targets are round shapes) and ``testB`` (targets are angular shapes) play the roles of RefCOCO's
people / objects splits; ``train`` and ``val`` are mixed.

Ground-truth expressions are human-style ("the small red circle on the left", "the blue square below the green
star", "a yellow ring sitting next to a white cross") and are generated from a formal :class:`ExpressionSpec`
that :func:`describe_matches` evaluates against the scene: every written expression matches exactly its target.

For the ``train`` images only, the generator also writes what off-the-shelf upstream models would say about them
(``docs/upstream_formats.md``): detector boxes with classes and scores, attribute predictions, scene-graph
triplets and captions, each with controllable noise (box jitter, missed, spurious and duplicate detections,
class confusions, wrong attributes, wrong relations, wrong captions). A separate image-caption corpus serves to
pretrain a tiny CLIP.

Layout under ``data_root``::

    synthetic/images/syn_000001.jpg ...        train, val, testA, testB images (one folder, global numbering)
    synthetic/upstream/{detections,attributes,scene_graphs,captions,synonyms}.json   train images only
    synthetic/pretrain/caption_corpus.json + pretrain_images/pre_000001.jpg ...
    synthetic/annotations.json                  every scene's objects and expressions (ground truth)
    synthetic/world.json                        config, its hash, vocabulary and the summary (written last)

and ``{split_root}/synthetic/synthetic_{split}.pth`` for ``train``, ``val``, ``testA``, ``testB`` with samples
``(image_file, object_id, [x, y, w, h], phrase, expression_kind)``; boxes are whole pixels stored as floats, so
the loaders' ``int()`` truncation is exact.

Every random draw comes from a ``numpy`` Generator keyed by (seed, split, image index, purpose), so a seed gives
byte-identical files, changing one split's size leaves the other splits' scenes unchanged, and changing a noise
level leaves the scenes, images and ground truth unchanged (the detector's draws do not even depend on its rates,
so raising one only adds noise of that kind).

Modules: ``config`` (``SyntheticConfig``, the vocabulary, the seeded streams), ``scenes`` (scene model, meaning of
an expression, scene sampling), ``render`` (images), ``language`` (phrases, ground-truth expressions, corpus
captions), ``upstream`` (the simulated upstream models), ``world`` (building and writing it all: ``generate``) and
``cli`` (``python -m demo.synthetic --data_root DIR --split_root DIR [--seed N ...]``).
"""
from demo.synthetic.config import (CLASSES, COLOURS, DATASET, FAMILIES, KINDS, LOCATIONS, PREDICATES, SIZES, SPLITS,
                                   SyntheticConfig, rng_for)
from demo.synthetic.render import class_texture, render_scene
from demo.synthetic.scenes import (Expression, ExpressionSpec, Pose, Scene, SceneObject, describe_matches,
                                   relation_holds, sample_scene)
from demo.synthetic.world import build_world, generate, output_paths

__all__ = ["CLASSES", "COLOURS", "DATASET", "FAMILIES", "KINDS", "LOCATIONS", "PREDICATES", "SIZES", "SPLITS",
           "Expression", "ExpressionSpec", "Pose", "Scene", "SceneObject", "SyntheticConfig", "build_world",
           "class_texture", "describe_matches", "generate", "output_paths", "relation_holds", "render_scene",
           "rng_for", "sample_scene"]
