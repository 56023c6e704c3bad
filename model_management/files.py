"""Model files on disk: weights straight onto their device and dtype, safetensors metadata, textual-
inversion embeddings and diffusers folders, all resolved through the app's `Folders` (contained paths)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from diffusion.checkpoint import CheckpointError, open_state_dict, read_metadata, read_state_dict
from diffusion.prompt import EmbeddingLookup, select_embedding
from model_management.folders import Folders, PathRefused, contained

log = logging.getLogger(__name__)

EMBEDDING_EXTENSIONS = ("", ".safetensors", ".pt", ".bin")


def load_state_dict(path: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None) -> Mapping[str, Tensor]:
    """Every tensor of a weights file on `device`; floating-point ones cast to `dtype` when given.

    Uncast on the CPU, a safetensors file comes back lazy (`LazyWeights`): the loaders convert each
    tensor to its component's dtype as they read it, so the file's copy is never held whole."""
    if dtype is None and torch.device(device).type == "cpu":
        return open_state_dict(path)
    weights = read_state_dict(path, device)
    if dtype is None:
        return weights
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors file; {} for other formats."""
    return read_metadata(path)


def _read_embedding(path: Path) -> Any:
    """An embedding file's raw content: A1111 .pt files are nested dicts, so nothing is unwrapped."""
    try:
        if path.suffix.lower() == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is "not an embedding"
        raise CheckpointError(path, f"cannot read it as an embedding ({type(exc).__name__}: {exc})") from exc


def embedding_lookup(folders: Folders, widths: dict[str, int]) -> EmbeddingLookup:
    """`embedding:NAME` resolution for a text encoder set: NAME is a path under models/embeddings with
    an optional extension; `widths` maps clip_l / clip_h / clip_g to the tower width. Unknown or
    refused names give None (the prompt code warns and drops them)."""
    files: dict[str, Any] = {}

    def lookup(name: str, key: str) -> Tensor | None:
        if name not in files:
            files[name] = None
            for ext in EMBEDDING_EXTENSIONS:
                try:
                    path = folders.model_path("embeddings", name + ext)
                except FileNotFoundError:
                    continue
                except PathRefused as exc:
                    log.warning("embedding %r: %s", name, exc)
                    break
                if not path.is_file():
                    continue
                try:
                    files[name] = _read_embedding(path)
                except CheckpointError as exc:
                    log.warning("embedding %r: %s", name, exc)
                break
        data = files[name]
        return None if data is None else select_embedding(data, key, widths[key])

    return lookup


def list_diffusers(folders: Folders) -> list[str]:
    """Folders (relative, forward slashes) under the diffusers roots that hold a model_index.json."""
    found: set[str] = set()
    for root in folders.models.get("diffusers", []):
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            if "model_index.json" in filenames:
                found.add(os.path.relpath(dirpath, root).replace(os.sep, "/"))
                dirnames.clear()
    return sorted(found)


def diffusers_path(folders: Folders, name: str) -> Path:
    """The diffusers folder called `name` (contained in a diffusers root)."""
    for root in folders.models.get("diffusers", []):
        path = contained(root, name)
        if (path / "model_index.json").is_file():
            return path
    raise FileNotFoundError(f"{name!r} was not found in the 'diffusers' model folders")
