"""Fixtures for model-layer tests: tiny random checkpoints (tools/make_random_checkpoint.py) written in
the real layouts into a session-wide models/ tree, and an fp32 CPU app over it.

    write_checkpoint("sdxl", dtype="fp16", fmt="ckpt") -> "sdxl-fp16.ckpt" (a name for ckpt_name)
    write_checkpoint("sd15", fmt="diffusers")           -> "sd15-fp32" (a DiffusersLoader model_path)
    tiny_state_dict("sd15")                             -> the fp32 single-file dict itself
    load_checkpoint("sd15")                             -> (MODEL, CLIP, VAE) via CheckpointLoaderSimple
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import pytest
import torch

from model_management.devices import DevicePolicy
from model_management.folders import Folders
from nodes.loaders import CheckpointLoaderSimple
from nodes.runtime import NodeRuntime, NodeServices
from tools.make_random_checkpoint import DTYPES, make_checkpoint, write_checkpoint as write_file, write_diffusers

FAMILIES = ("sd15", "sd15-inpaint", "sd21-v", "sdxl", "sdxl-refiner")


@lru_cache(maxsize=None)
def _state_dict(family: str, dtype: str, seed: int) -> dict[str, torch.Tensor]:
    return make_checkpoint(family, tiny=True, dtype=DTYPES[dtype], seed=seed)


@pytest.fixture(scope="session")
def tiny_state_dict() -> Callable[..., dict[str, torch.Tensor]]:
    """tiny_state_dict(family, dtype="fp32", seed=0): a cached single-file state dict (do not modify)."""
    return lambda family, dtype="fp32", seed=0: _state_dict(family, dtype, seed)


@pytest.fixture(scope="session")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models_app")
    Folders.create(base).ensure()
    return base


@pytest.fixture(scope="session")
def write_checkpoint(model_base: Path, tiny_state_dict) -> Callable[..., str]:
    """Write (once per session) a tiny checkpoint; returns its name in checkpoints/ or diffusers/."""
    def write(family: str, dtype: str = "fp32", fmt: str = "safetensors") -> str:
        name = f"{family}-{dtype}"
        if fmt == "diffusers":
            folder = model_base / "models" / "diffusers" / name
            if not folder.exists():
                write_diffusers(tiny_state_dict(family, dtype), folder)
            return name
        name = f"{name}.{fmt}"
        path = model_base / "models" / "checkpoints" / name
        if not path.exists():
            write_file(tiny_state_dict(family, dtype), path)
        return name
    return write


@pytest.fixture
def services(model_base: Path) -> NodeServices:
    folders = Folders.create(model_base)
    return NodeServices(folders, devices=DevicePolicy.cpu())


@pytest.fixture
def rt(services: NodeServices) -> NodeRuntime:
    return NodeRuntime(services, prompt_id="p1", node_id="1", display_node_id="1",
                       _progress=lambda value, total, preview: None, _interrupted=lambda: False,
                       _send_text=lambda text: None)


@pytest.fixture
def load_checkpoint(rt: NodeRuntime, write_checkpoint) -> Callable[..., tuple]:
    """load_checkpoint(family, dtype="fp32", fmt="safetensors") -> (MODEL, CLIP, VAE)."""
    return lambda family, dtype="fp32", fmt="safetensors": CheckpointLoaderSimple().execute(
        write_checkpoint(family, dtype, fmt), rt)
