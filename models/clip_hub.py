"""Finding CLIP weight files in a Hugging Face hub repository or in a local folder of the same layout.

Hub files come through ``huggingface_hub.hf_hub_download``, which reads the environment itself: ``HF_HOME`` /
``HF_HUB_CACHE`` (the cache folder), ``HF_ENDPOINT`` (a mirror), ``HF_HUB_OFFLINE`` (cache only), ``HF_TOKEN`` or
a stored login (gated or private repositories). A folder is read directly (a ``save_pretrained`` folder, a hub
snapshot ``.../snapshots/<commit>``, or a folder holding open_clip's files).

Files looked for, in this order:
1. open_clip layout (OpenAI's tensor names): ``open_clip_model.safetensors``, else ``open_clip_pytorch_model.bin``;
   ``open_clip_config.json`` when present;
2. transformers ``CLIPModel`` layout: ``model.safetensors``, else ``pytorch_model.bin``, with ``config.json``
   (required: it holds the head counts).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from models.clip_layouts import OPEN_CLIP_CONFIG, TRANSFORMERS_CONFIG
from utils.errors import InputError

HUB_PREFIX = "hf-hub:"
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TRANSFORMERS_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class WeightFiles:
    """Where one CLIP's files are: the weights, the config that goes with them (or None), and the origin a source
    record stores (``kind`` ``hf-hub`` with repo / revision commit / file, or ``local``). The tensors themselves
    tell their layout (``models.clip_layouts.detect_layout``)."""

    weights: str
    config: Optional[str]
    origin: Dict[str, Any] = field(default_factory=dict)


class HubMiss(Exception):
    """A repository or folder that holds no usable CLIP files; ``where`` and ``reason`` say what was tried."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where} ({reason})")
        self.where, self.reason = where, reason


def _locate(find: Callable[[str], Optional[str]], what: str, prefer: Optional[str] = None) -> Optional[WeightFiles]:
    """The first weight file ``find`` returns (order: the module docstring, ``prefer`` first), or None."""
    candidates = sorted(OPEN_CLIP_FILES + TRANSFORMERS_FILES, key=lambda name: name != prefer)
    for name in candidates:
        path = find(name)
        if not path:
            continue
        if name in OPEN_CLIP_FILES:
            return WeightFiles(path, find(OPEN_CLIP_CONFIG), {"file": name})
        config = find(TRANSFORMERS_CONFIG)
        if not config:
            raise InputError(f"{what}: transformers weights {name} without config.json (it holds the attention "
                             "head counts and activation; put it next to the weights)")
        return WeightFiles(path, config, {"file": name})
    return None


def folder_files(folder: str) -> WeightFiles:
    """The CLIP files of a local folder (``InputError`` naming the folder when there are none)."""
    def find(name: str) -> Optional[str]:
        path = os.path.join(folder, name)
        return path if os.path.isfile(path) else None

    found = _locate(find, folder)
    if found is None:
        raise InputError(f"{folder}: a folder without CLIP weights (looked for {', '.join(OPEN_CLIP_FILES)}, or "
                         f"{' / '.join(TRANSFORMERS_FILES)} with config.json)")
    found.origin.update(kind="local", file=os.path.abspath(found.weights))
    return found


def parse_hub_spec(spec: str) -> tuple:
    """``hf-hub:ORG/NAME[@REVISION]`` -> (repo, revision or None)."""
    body = spec[len(HUB_PREFIX):]
    repo, _, revision = body.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise InputError(f"--model {spec}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return repo, revision or None


def hub_cache_folder(repo: str) -> str:
    """The folder ``huggingface_hub`` keeps ``repo`` in (under ``HF_HUB_CACHE``, default ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return os.path.join(constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))


def hub_settings() -> str:
    """The endpoint and offline mode ``huggingface_hub`` uses, for messages."""
    from huggingface_hub import constants

    return f"endpoint {constants.ENDPOINT}{', HF_HUB_OFFLINE=1' if constants.is_offline_mode() else ''}"


def _snapshot_commit(path: str) -> Optional[str]:
    parts = os.path.normpath(path).split(os.sep)
    hits = [i for i, part in enumerate(parts) if part == "snapshots"]
    return parts[hits[-1] + 1] if hits and hits[-1] + 1 < len(parts) else None


def hub_files(repo: str, revision: Optional[str] = None, prefer: Optional[str] = None) -> WeightFiles:
    """Download (or find in the cache) ``repo``'s CLIP files at ``revision`` (default: main). ``prefer``: a file
    name to look for first (the one a source record names). Raises ``HubMiss`` saying what went wrong."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    where = f"hf-hub:{repo}{'@' + revision if revision else ''} (cache {hub_cache_folder(repo)}, {hub_settings()})"
    reasons: List[str] = []
    network = True  # False once the hub proved unreachable (or HF_HUB_OFFLINE): the cache alone from then on

    def find(name: str) -> Optional[str]:
        nonlocal network
        if not network:
            cached = try_to_load_from_cache(repo, name, revision=revision)
            return cached if isinstance(cached, str) else None
        try:
            return hf_hub_download(repo, name, revision=revision)
        except HFValidationError as exc:
            raise HubMiss(where, f"not a repository name: {exc}") from exc
        except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise HubMiss(where, f"{type(exc).__name__}: {str(exc).splitlines()[0]}; a private or gated repository "
                                 "needs HF_TOKEN or `hf auth login`") from exc
        except LocalEntryNotFoundError:
            # The hub could not be reached and the file is not cached: look only in the cache from now on.
            reasons.append("not in the cache (HF_HUB_OFFLINE=1)" if constants.is_offline_mode()
                           else "hub unreachable and not in the cache")
            network = False
            return None
        except (EntryNotFoundError, OSError) as exc:
            if not isinstance(exc, EntryNotFoundError):
                reasons.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return None

    try:
        found = _locate(find, where, prefer)
    except InputError as exc:
        raise HubMiss(where, str(exc).split(": ", 1)[-1]) from exc
    if found is None:
        if reasons:
            reason = "; ".join(dict.fromkeys(reasons))
        else:
            reason = "no CLIP files in the repository"
        raise HubMiss(where, reason)
    found.origin.update(kind="hf-hub", repo=repo, revision=_snapshot_commit(found.weights) or revision)
    return found
