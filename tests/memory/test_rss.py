"""Repeated prompts do not grow the process: 20 runs through the real executor of a LoRA'd tiny SD1
txt2img whose LoRA strength and seed change every time (so the loader, the patched clone, the sampler
and the decoder run again and the old clone is released), under a device budget that makes the UNet
stream. RSS is read after a collection and malloc_trim (allocator slack is not a leak)."""
from __future__ import annotations

import ctypes
import gc
import os

import pytest

from tests.memory.conftest import make_kohya_lora
from diffusion.checkpoint_keys import split_checkpoint
from diffusion.keymaps_clip import to_module_keys

RUNS = 20
GROWTH_LIMIT = 4 << 20  # bytes over all RUNS runs


def rss() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def prompt(ckpt: str, lora: str, i: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora,
                                                     "strength_model": 0.5 + 0.01 * i, "strength_clip": 0.5}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a cat number {i}", "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": i,
            "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }


@pytest.mark.slow
def test_repeated_prompts_do_not_grow_rss(make_app, tiny, write_model):
    state = tiny("sd15", 0)
    ckpt = write_model("checkpoints", "rss.safetensors", state)
    parts = split_checkpoint(state)
    lora = make_kohya_lora(parts.unet, {"clip_l": to_module_keys(parts.text_encoders["clip_l"].state_dict)})
    name = write_model("loras", "rss_lora.safetensors", lora.state_dict)
    unet_bytes = sum(v.numel() * 4 for k, v in state.items() if k.startswith("model.diffusion_model."))
    app = make_app(vram_budget=unet_bytes)
    for i in range(3):  # warm-up: imports, allocator pools, first-call caches
        app.run(prompt(ckpt, name, i))
    before = rss()
    for i in range(3, 3 + RUNS):
        app.run(prompt(ckpt, name, i))
    growth = rss() - before
    assert growth < GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB over {RUNS} runs"
    assert len(app.manager._slots) == 3  # MODEL, CLIP, VAE: released clones leave no slots behind
    assert any(e.kind == "partial" for e in app.manager.events)
