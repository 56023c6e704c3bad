"""Fixtures for node tests: an isolated app (folders under tmp_path) and a per-call runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_management.folders import Folders
from nodes.runtime import NodeRuntime, NodeServices


@pytest.fixture
def services(tmp_path: Path) -> NodeServices:
    folders = Folders.create(tmp_path / "app")
    folders.ensure()
    return NodeServices(folders)


@pytest.fixture
def rt(services: NodeServices) -> NodeRuntime:
    return NodeRuntime(services, prompt_id="p1", node_id="1", display_node_id="1",
                       _progress=lambda value, total, preview: None, _interrupted=lambda: False,
                       _send_text=lambda text: None)


def _write_image(path: Path, pixels: list | np.ndarray, **save_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, **save_args)
    return path


@pytest.fixture
def write_image():
    """write_image(path, pixels, **save_args): a small 8-bit image from [H][W][C] or [H][W] values."""
    return _write_image
