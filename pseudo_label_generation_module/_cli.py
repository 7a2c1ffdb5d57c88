"""Command-line plumbing shared by the generator CLIs: common flags, config-dataclass flags, writing outputs."""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Dict, List, Sequence, Tuple, Type, TypeVar

from datasets.records import LAYOUTS
from pseudo_label_generation_module.inputs import load_synonyms
from pseudo_label_generation_module.lexicon import Lexicon
from pseudo_label_generation_module.samples import save_samples
from pseudo_label_generation_module.stats import expression_statistics
from utils.errors import UsageError
from utils.io import check_writable_file, write_json

C = TypeVar("C")


def _csv(text: str) -> Tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset --output --synonyms --stats``."""
    parser.add_argument("--dataset", required=True, choices=tuple(LAYOUTS),
                        help="target dataset: decides the sample layout and box convention")
    parser.add_argument("--output", required=True, help="pseudo split file to write (.pth)")
    parser.add_argument("--synonyms", help="synonyms.json {class: [words]} (optional): more words naming each "
                                           "class, for caption subjects and the entity counts of the statistics")
    parser.add_argument("--stats", help="statistics JSON to write (default: the output path with _stats.json)")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: Type[Any]) -> None:
    """One ``--name`` flag per field of a config dataclass (lists as comma-separated values)."""
    group = parser.add_argument_group("rule parameters (defaults: the published values)")
    for f in dataclasses.fields(config_cls):
        default = f.default
        kind = _csv if isinstance(default, tuple) else type(default)
        shown = ",".join(default) if isinstance(default, tuple) else default
        group.add_argument(f"--{f.name}", type=kind, default=default,
                           help=f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%"))


def config_from_args(args: argparse.Namespace, config_cls: Type[C]) -> C:
    """The config dataclass from the parsed flags; invalid values exit with the dataclass's message."""
    try:
        return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
    except ValueError as e:
        raise UsageError(str(e)) from None


def stats_path(args: argparse.Namespace) -> str:
    """``--stats`` or the output path with ``.pth`` replaced by ``_stats.json``."""
    if args.stats:
        return args.stats
    root, ext = os.path.splitext(args.output)
    return (root if ext == ".pth" else args.output) + "_stats.json"


def check_outputs(args: argparse.Namespace) -> None:
    """Prove ``--output`` and the statistics file can be written, before any work (``InputError`` naming the
    flag and the path)."""
    check_writable_file(args.output, "--output")
    check_writable_file(stats_path(args), "--stats" if args.stats else "--stats (from --output)")


def lexicon_from_args(args: argparse.Namespace, classes: Sequence[str]) -> Lexicon:
    """The lexicon of ``classes`` plus ``--synonyms``."""
    return Lexicon(classes, load_synonyms(args.synonyms) if args.synonyms else None)


def write_outputs(args: argparse.Namespace, source: str, samples: List[tuple], counts: Dict[str, Any],
                  classes: Sequence[str]) -> Dict[str, Any]:
    """Save the samples to ``--output`` and their statistics (plus the generator's ``counts``) to the stats
    path; print a one-line summary."""
    save_samples(samples, args.output)
    report = {"source": source, "dataset": args.dataset, "output": args.output, "generation": counts,
              "statistics": expression_statistics(samples, args.dataset, lexicon_from_args(args, classes))}
    path = write_json(stats_path(args), report)
    s = report["statistics"]
    print(f"{source}: {s['samples']} samples on {s['images']} images -> {args.output} (statistics: {path})")
    return report

