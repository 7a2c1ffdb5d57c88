"""Checked readers for the package's inputs (``InputError`` naming the file; writes go through ``utils.io``)."""
from __future__ import annotations

import json
import os
import pickle
from typing import Any, List

from utils.errors import InputError
from utils.io import torch_load_plain


def read_json(path: str) -> Any:
    """Parse a JSON file; a missing or unparsable file raises an error naming it."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None


def load_sample_list(path: str) -> List[Any]:
    """A torch.save'd list of samples, loaded as safely as ``weights_only=True`` (``torch_load_plain``); errors name
    the file."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    try:
        data = torch_load_plain(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a torch.save'd list of plain tuples ({e})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of samples, got {type(data).__name__}")
    return data

