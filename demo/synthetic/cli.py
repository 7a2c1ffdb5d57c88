"""``python -m demo.synthetic``: generate the synthetic world from the command line and print its summary."""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Dict, Optional, Sequence

from demo.synthetic.config import KINDS, SyntheticConfig
from demo.synthetic.world import generate
from utils.errors import UsageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo.synthetic",
                                     description="Generate the synthetic referring world (dataset 'synthetic').")
    parser.add_argument("--data_root", required=True, help="images, upstream outputs and corpus go under "
                                                           "DATA_ROOT/synthetic")
    parser.add_argument("--split_root", required=True, help="split files go under SPLIT_ROOT/synthetic")
    parser.add_argument("--force", action="store_true", help="regenerate even when world.json matches")
    parser.add_argument("--workers", type=int, help="processes that build and render the scenes (default: the CPUs "
                                                    "available; the files do not depend on it)")
    for f in dataclasses.fields(SyntheticConfig):
        if f.name == "expression_mix":
            parser.add_argument("--expression_mix", type=lambda s: tuple(float(v) for v in s.split(",")),
                                default=f.default, help=f"comma-separated weights for {', '.join(KINDS)}")
        elif isinstance(f.default, bool):
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """CLI entry: generate and print the summary as JSON."""
    args = _parser().parse_args(argv)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)}
    try:
        config = SyntheticConfig(**fields)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    summary = generate(args.data_root, args.split_root, config, force=args.force, workers=args.workers)
    print(json.dumps(summary, indent=2))
    return summary
