"""Checked reading of the package's JSON inputs (``InputError`` naming the file; split files are read by
``datasets.records.load_split_file``, writes go through ``utils.io``)."""
from __future__ import annotations

import json
import os
from typing import Any

from utils.errors import InputError


def read_json(path: str) -> Any:
    """Parse a JSON file; a missing or unparsable file raises an error naming it."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None


