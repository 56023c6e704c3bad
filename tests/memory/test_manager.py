"""The memory manager on the CPU with a simulated device budget (--vram-budget): LRU eviction order,
partial loading with streamed layers (same fp32 output as a full load), OOM fallback down the modes,
dropping idle models to disk under a RAM budget, patch switching between clones, smart-memory off,
forgetting dead handles, and the app wiring (/free, /system_stats, --disable-smart-memory)."""
from __future__ import annotations

import gc

import pytest
import torch

from diffusion.checkpoint import build_unet, make_denoiser, Placement
from diffusion.checkpoint_keys import split_checkpoint
from model_management.devices import DevicePolicy
from model_management.handles import ModelHandle, model_handle
from model_management.manager import MemorySettings, ModelManager, unet_working_memory
from model_management.patcher import Patch, add_patches, nbytes
from diffusion.adapters import Diff
from server.routes_info import system_stats

GEN = torch.Generator().manual_seed(11)
X = torch.randn(1, 4, 8, 8, generator=GEN)
CONTEXT = torch.randn(1, 77, 32, generator=GEN)


def unet_model(manager: ModelManager | None, tiny, seed: int = 0, label: str | None = None) -> ModelHandle:
    parts = split_checkpoint(tiny("sd15", seed))
    unet = build_unet("tiny", parts.unet, Placement())
    _, denoiser = make_denoiser("tiny", unet, parts.markers)
    return model_handle(denoiser, DevicePolicy.cpu(), manager, label)


def unet_size(tiny) -> int:
    return nbytes(v for k, v in tiny("sd15", 0).items() if k.startswith("model.diffusion_model."))


@torch.no_grad()
def forward(model: ModelHandle) -> torch.Tensor:
    return model.to_device(working_memory=0).unet(X, torch.tensor([500.0]), CONTEXT)


def kinds(manager: ModelManager) -> list[tuple[str, str]]:
    return [(e.kind, e.model) for e in manager.events]


def resident_peak(manager: ModelManager) -> int:
    """The most bytes the event log ever shows on the device at once."""
    resident: dict[str, int] = {}
    peak = 0
    for event in manager.events:
        if event.kind in ("load", "partial"):
            resident[event.model] = event.bytes
        elif event.kind == "unload":
            resident.pop(event.model, None)
        peak = max(peak, sum(resident.values()))
    return peak


def test_three_models_evict_the_least_recently_used(tiny):
    size = unet_size(tiny)
    manager = ModelManager(MemorySettings(vram_budget=int(2.5 * size)))
    a, b, c = (unet_model(manager, tiny, seed, name) for seed, name in enumerate("ABC"))
    for model in (a, b, c):
        forward(model)
    assert kinds(manager) == [("load", "A"), ("load", "B"), ("unload", "A"), ("load", "C")]
    forward(b)  # already resident: no event, but B becomes the most recently used
    forward(a)
    assert kinds(manager)[4:] == [("unload", "C"), ("load", "A")]
    assert all(e.bytes == size and e.ms >= 0 and e.device == "cpu" for e in manager.events)
    assert resident_peak(manager) <= 2.5 * size
    assert {m["model"]: m["mode"] for m in manager.loaded()} == {"A": "full", "B": "full", "C": "offloaded"}
    # working memory counts too: asking for room for one more model's worth evicts the older one
    manager.load([a], working_memory=size)
    assert kinds(manager)[-1] == ("unload", "B")


def test_a_model_bigger_than_the_budget_runs_partially_with_the_same_output(tiny):
    full = forward(unet_model(ModelManager(), tiny))
    size = unet_size(tiny)
    budget = int(0.6 * size)
    manager = ModelManager(MemorySettings(vram_budget=budget))
    model = unet_model(manager, tiny, label="big")
    out = forward(model)
    assert torch.equal(out, full)
    (event,) = manager.events
    assert event.kind == "partial" and 0 < event.bytes <= budget and event.bytes + event.streamed == size
    slot = next(iter(manager._slots.values()))
    streamer = slot.streamer
    assert streamer.calls > 0 and streamer.in_flight == 0
    assert slot.device_bytes + streamer.peak <= budget  # resident part + layers in flight stay in budget
    # parked layers hold meta tensors between forwards, so a missed hook cannot silently read RAM
    parked = [p for p in model.base.unet.parameters() if p.device.type == "meta"]
    assert parked and nbytes(parked) == event.streamed
    assert torch.equal(forward(model), full)  # a second call streams again
    manager.unload_all()
    assert all(p.device.type == "cpu" for p in model.base.unet.parameters())
    assert torch.equal(forward(unet_model(ModelManager(), tiny)), full)


def test_novram_streams_everything_and_patches_are_streamed_patched(tiny):
    reference_manager = ModelManager()
    reference = unet_model(reference_manager, tiny).clone()
    key = "input_blocks.1.1.proj_in.weight"
    delta = torch.randn(reference.base.unet.get_parameter(key).shape, generator=GEN)
    add_patches(reference, {key: Diff(delta)}, 0.5)
    want = forward(reference)
    manager = ModelManager(MemorySettings(vram_budget=unet_size(tiny), vram_mode="no"))
    model = unet_model(manager, tiny).clone()
    add_patches(model, {key: Diff(delta)}, 0.5)
    torch.testing.assert_close(forward(model), want, atol=0, rtol=0)
    assert manager.events[0].kind == "partial" and manager.events[0].bytes < unet_size(tiny) // 10


def test_out_of_memory_moves_down_the_modes_instead_of_failing(tiny):
    size = unet_size(tiny)
    manager = ModelManager(MemorySettings(vram_budget=int(1.2 * size)))
    model = unet_model(manager, tiny, label="M")
    calls = []

    def step() -> torch.Tensor:
        calls.append(next(iter(manager._slots.values())).mode)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        with torch.no_grad():
            return model.denoiser.unet(X, torch.tensor([500.0]), CONTEXT)

    out = manager.run([model], 0, step)
    assert calls == ["full", "partial"]
    assert kinds(manager) == [("load", "M"), ("unload", "M"), ("oom", "M"), ("partial", "M")]
    assert torch.equal(out, forward(unet_model(ModelManager(), tiny)))
    with pytest.raises(ValueError):
        manager.run([model], 0, lambda: (_ for _ in ()).throw(ValueError("not memory")))


def test_out_of_memory_while_loading_retries(tiny, monkeypatch):
    manager = ModelManager(MemorySettings(vram_budget=2 * unet_size(tiny)))
    other, model = unet_model(manager, tiny, 1, "other"), unet_model(manager, tiny, 0, "M")
    forward(other)
    original = ModelManager._load_full
    failures = []

    def flaky(self, handle, slot):
        if slot.label == "M" and not failures:
            failures.append(1)
            raise torch.OutOfMemoryError("simulated")
        return original(self, handle, slot)
    monkeypatch.setattr(ModelManager, "_load_full", flaky)
    out = forward(model)
    assert kinds(manager) == [("load", "other"), ("unload", "other"), ("oom", "M"), ("partial", "M")]
    assert torch.equal(out, forward(unet_model(ModelManager(), tiny)))


def test_ram_budget_drops_idle_models_to_disk_and_reads_them_back(tiny, tmp_path):
    size = unet_size(tiny)
    manager = ModelManager(MemorySettings(ram_budget=int(1.5 * size), spill_dir=tmp_path))
    a = unet_model(manager, tiny, 0, "A")
    want = forward(unet_model(ModelManager(), tiny, 0))
    before = {k: v.clone() for k, v in a.base.unet.state_dict().items()}
    b = unet_model(manager, tiny, 1, "B")  # registering B puts RAM over budget: idle A goes to disk
    assert kinds(manager) == [("drop", "A")]
    assert all(p.device.type == "meta" for p in a.base.unet.parameters())
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1 and manager.ram_in_use() == size
    out = forward(a)  # A comes back (B goes), straight from its spill file
    assert kinds(manager)[1:] == [("drop", "B"), ("restore", "A"), ("load", "A")]
    assert torch.equal(out, want)
    assert all(torch.equal(v, before[k]) for k, v in a.base.unet.state_dict().items())
    assert b.manager.originals(b)["out.2.weight"].device.type == "cpu"  # originals() reads B back too
    assert kinds(manager)[-2][0] == "drop" and kinds(manager)[-1] == ("restore", "B")
    del a, b
    gc.collect()
    assert manager._slots == {} and list(tmp_path.rglob("*.safetensors")) == []


def test_clones_with_other_patches_swap_them_and_restore_exact_tensors(tiny):
    manager = ModelManager()
    base = unet_model(manager, tiny)
    key = "out.2.weight"
    original = base.base.unet.get_parameter(key)
    snapshot = original.clone()
    one, two = base.clone(), base.clone()
    delta = torch.ones_like(original)
    add_patches(one, {key: Diff(delta)}, 1.0)
    add_patches(two, {key: Diff(delta)}, -2.0)
    for model, factor in ((one, 1.0), (two, -2.0), (one, 1.0), (base, 0.0)):
        model.to_device(working_memory=0)
        torch.testing.assert_close(base.base.unet.get_parameter(key), snapshot + factor * delta)
    assert base.base.unet.get_parameter(key) is original  # the very same tensor after unpatching
    assert [k for k, _ in kinds(manager)] == ["load", "unload", "load", "unload", "load", "unload", "load"]
    one.to_device(working_memory=0)
    one.clone().to_device(working_memory=0)  # a clone sharing the patches reuses what is loaded
    assert [k for k, _ in kinds(manager)][-2:] == ["unload", "load"]
    assert isinstance(one.patches[key][0], Patch)


def test_smart_memory_off_unloads_everything_not_requested(tiny):
    manager = ModelManager(MemorySettings(smart_memory=False, vram_budget=10 * unet_size(tiny)))
    a, b = unet_model(manager, tiny, 0, "A"), unet_model(manager, tiny, 1, "B")
    forward(a)
    forward(b)
    assert kinds(manager) == [("load", "A"), ("unload", "A"), ("load", "B")]


def test_working_memory_estimates_grow_with_resolution_and_batch(tiny):
    config = unet_model(None, tiny).base.unet.config
    small = unet_working_memory(config, (1, 4, 32, 32))
    assert unet_working_memory(config, (2, 4, 32, 32)) > 1.9 * small
    assert unet_working_memory(config, (1, 4, 64, 64)) > 3.9 * small
    assert unet_working_memory(config, (1, 4, 32, 32), torch.float16) < small


def test_app_wiring_free_system_stats_and_disable_smart_memory(make_app, write_model, tiny):
    budget = 64 << 20
    app = make_app(vram_budget=budget, smart_memory=False)
    name = write_model("checkpoints", "wired.safetensors", tiny("sd15", 0))
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
              "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
              "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "5": {"class_type": "KSampler", "inputs": {
                  "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                  "seed": 1, "steps": 1, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
              "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
              "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}}
    app.run(prompt)
    manager = app.manager
    loaded = {e.model for e in manager.events if e.kind == "load"}
    assert loaded == {f"{name} (CLIP)", f"{name} (MODEL)", f"{name} (VAE)"}
    device = system_stats(app.ctx.config, manager)["devices"][0]
    assert device["vram_total"] == budget and device["vram_free"] < budget
    app.ctx.worker._apply_free()  # --disable-smart-memory asked the worker to unload after the prompt
    assert all(m["mode"] == "offloaded" for m in manager.loaded())
    assert system_stats(app.ctx.config, manager)["devices"][0]["vram_free"] == budget
    forward_count = len(manager.events)
    app.ctx.worker.request_free(unload_models=True, free_memory=False)  # POST /free
    app.ctx.worker._apply_free()
    assert len(manager.events) == forward_count  # nothing loaded, nothing to unload


def test_xpu_and_mps_are_detected_after_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    policy = DevicePolicy.from_flags(cpu_bf16=False)
    assert (policy.load_device.type, policy.offload_device.type, policy.unet_dtype, policy.vae_dtype) == \
        ("mps", "cpu", torch.float16, torch.float32)
    assert DevicePolicy.from_flags(cpu=True, cpu_bf16=False) == DevicePolicy.cpu()
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
        assert DevicePolicy.from_flags(cpu_bf16=False).load_device.type == "xpu"
