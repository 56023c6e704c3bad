"""Tensor-by-tensor safetensors reading (`LazyWeights`): the same tensors as safetensors gives, shapes
from the header alone, and the loader path converting each tensor as it is read."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion.checkpoint import CheckpointError, LazyWeights, Placement, open_state_dict
from model_management.files import load_state_dict

TENSORS = {
    "half": torch.randn(3, 5).half(),
    "brain": torch.randn(7).bfloat16(),
    "single": torch.randn(2, 2, 2),
    "steps": torch.arange(4),
    "mask": torch.tensor([True, False]),
    "scalar": torch.tensor(1.5),
    "empty": torch.zeros(0, 4),
}


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(TENSORS, str(path))
    return path


def test_reads_what_safetensors_reads(weights_file):
    lazy, eager = LazyWeights(weights_file), load_file(str(weights_file))
    assert list(lazy) == sorted(eager) and len(lazy) == len(eager) and "half" in lazy and "nope" not in lazy
    for key, tensor in eager.items():
        assert lazy[key].dtype == tensor.dtype and torch.equal(lazy[key], tensor)
    with pytest.raises(KeyError):
        lazy["nope"]


def test_meta_stand_ins_and_reads_inside_a_meta_block(weights_file):
    lazy = LazyWeights(weights_file)
    meta = lazy.meta()
    assert all(t.is_meta and t.shape == TENSORS[k].shape and t.dtype == TENSORS[k].dtype for k, t in meta.items())
    with torch.device("meta"):  # model builders read shapes there
        assert lazy["single"].device.type == "cpu"


def test_loader_path_is_lazy_and_casts(weights_file):
    weights = load_state_dict(weights_file)
    assert isinstance(weights, LazyWeights)
    cast = Placement(dtype=torch.float32).cast(weights)
    assert cast["half"].dtype == torch.float32 and cast["steps"].dtype == torch.int64
    assert isinstance(load_state_dict(weights_file, dtype=torch.float32), dict)


def test_truncated_file_is_refused_by_name(weights_file):
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[:-8])
    with pytest.raises(CheckpointError, match=r"w\.safetensors: cannot read"):
        open_state_dict(weights_file)
