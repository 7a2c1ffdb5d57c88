"""Checked reading of the package's JSON inputs (errors name the file; split files are read by
``datasets.records.load_split_file``, writes go through ``utils.io``) and the CLI entry wrapper that turns such errors
into a one-line message."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable


def read_json(path: str) -> Any:
    """Parse a JSON file; a missing or unparsable file raises an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None


def run_cli(main: Callable[[], Any]) -> None:
    """Run a CLI ``main``; bad input (a missing or malformed file) exits with its one-line message, status 2."""
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
