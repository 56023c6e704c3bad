"""The memory manager on a real CUDA device: weights move and come back as the very same CPU tensors,
VRAM is freed on unload, partial loading streams pinned layers with prefetch and matches a full load,
patches are computed on the GPU, /system_stats reports the budget. Skipped without CUDA."""
from __future__ import annotations

import pytest
import torch

from diffusion.adapters import Diff
from diffusion.checkpoint import Placement, build_unet, make_denoiser
from diffusion.checkpoint_keys import split_checkpoint
from execution.context import Config, build_context
from model_management.devices import DevicePolicy
from model_management.handles import ModelHandle, model_handle
from model_management.manager import MemorySettings, ModelManager
from model_management.patcher import add_patches, nbytes
from server.routes_info import system_stats

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
POLICY = DevicePolicy(load_device=CUDA, offload_device=torch.device("cpu"), vae_device=CUDA)


def cuda_model(manager: ModelManager, tiny, seed: int = 0) -> ModelHandle:
    parts = split_checkpoint(tiny("sd15", seed))
    _, denoiser = make_denoiser("tiny", build_unet("tiny", parts.unet, Placement()), parts.markers)
    return model_handle(denoiser, POLICY, manager, f"cuda{seed}")


@torch.no_grad()
def forward(model: ModelHandle) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, 32, generator=gen)
    unet = model.to_device(working_memory=0).unet
    return unet(x.to(CUDA), torch.tensor([500.0, 20.0], device=CUDA), context.to(CUDA)).cpu()


def test_full_load_moves_weights_and_unload_gives_back_the_same_tensors(tiny):
    manager = ModelManager(MemorySettings(device=CUDA))
    model = cuda_model(manager, tiny)
    originals = {k: v for k, v in model.base.unet.state_dict(keep_vars=True).items()}
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    forward(model)
    assert all(p.device.type == "cuda" for p in model.base.unet.parameters())
    assert torch.cuda.memory_allocated() - before >= nbytes(originals.values())
    manager.unload_all()
    assert all(v is originals[k] for k, v in model.base.unet.state_dict(keep_vars=True).items())
    assert torch.cuda.memory_allocated() <= before


def test_partial_load_streams_pinned_layers_with_prefetch_and_matches_full(tiny):
    full = forward(cuda_model(ModelManager(MemorySettings(device=CUDA)), tiny))
    size = sum(v.numel() * 4 for k, v in tiny("sd15", 0).items() if k.startswith("model.diffusion_model."))
    manager = ModelManager(MemorySettings(device=CUDA, vram_budget=size // 2))
    model = cuda_model(manager, tiny)
    torch.testing.assert_close(forward(model), full, atol=1e-5, rtol=1e-5)
    slot = next(iter(manager._slots.values()))
    assert manager.events[-1].kind == "partial" and slot.streamer.calls > 0
    parked = [p for p in model.base.unet.parameters() if p.device.type == "cpu"]
    assert parked and all(p.is_pinned() for p in parked)
    assert slot.device_bytes + slot.streamer.peak <= size // 2


def test_patches_are_computed_on_the_gpu_and_removed(tiny):
    manager = ModelManager(MemorySettings(device=CUDA))
    model = cuda_model(manager, tiny)
    key = "input_blocks.1.1.proj_in.weight"
    original = model.base.unet.get_parameter(key)
    delta = torch.randn(original.shape)
    patched = model.clone()
    add_patches(patched, {key: Diff(delta)}, 0.5)
    forward(patched)
    torch.testing.assert_close(model.base.unet.get_parameter(key).cpu(), original + 0.5 * delta)
    manager.unload_all()
    assert model.base.unet.get_parameter(key) is original


def test_system_stats_reports_the_budget_on_cuda(tmp_path):
    ctx = build_context(Config(base_dir=tmp_path, persistent_queue=False, vram_budget=1 << 30), start_worker=False)
    try:
        device = system_stats(ctx.config, ctx.services.models)["devices"][0]
        assert device["type"] == "cuda" and device["vram_total"] == 1 << 30 and 0 < device["vram_free"] <= 1 << 30
    finally:
        ctx.close()
