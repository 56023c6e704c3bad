"""ComfyUI_examples LoRA, LCM-LoRA and model-merging prompts (API format) through the real app on tiny
random checkpoints and tiny kohya-layout LoRAs written under the referenced names: sizes shrunk to 64 px,
one image, 2 steps. Each must run, patch every LoRA module it names, and change the image compared with the same
prompt at strength 0 / ratio 1; the merging prompts also run under a device budget too small for the
merged UNet and give the same pictures. The LCM example waits for ModelSamplingDiscrete "lcm" (follow-up);
its SDXL kohya LoRA is checked on its own."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.checkpoint_keys import split_checkpoint
from diffusion.keymaps_clip import to_module_keys
from tests.memory.conftest import make_kohya_lora, write_file
from tests.paths import SHARED

pytestmark = pytest.mark.filterwarnings("ignore:Should have:UserWarning")

EXAMPLES = SHARED / "testdata/comfy_examples"
# Each referenced checkpoint gets its own tiny random weights (a seed per name).
CHECKPOINTS = {"v1-5-pruned-emaonly.ckpt": ("sd15", 0), "cardosAnime_v10.safetensors": ("sd15", 1),
               "AOM3A1.safetensors": ("sd15", 2), "sd_xl_1.0.safetensors": ("sdxl", 0)}
VAES = {"kl-f8-anime2.ckpt": ("sd15", 3)}
LORAS = {"epiNoiseoffset_v2.safetensors": ("sd15", 10), "theovercomer8sContrastFix_sd15.safetensors": ("sd15", 11),
         "lcm_lora_sdxl.safetensors": ("sdxl", 12)}
WORKFLOWS = ["lora__lora", "lora__lora_multiple", "lcm__lcm_basic_example", "model_merging__model_merging_basic",
             "model_merging__model_merging_3_checkpoints"]


def _shrink(prompt: dict) -> dict:
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs.update(width=64, height=64, batch_size=1)
        if node["class_type"] == "KSampler":
            inputs["steps"] = 2
    return prompt


def _write_files(prompt: dict, tiny, write_model) -> None:
    for node in prompt.values():
        inputs = node["inputs"]
        if "ckpt_name" in inputs:
            write_model("checkpoints", inputs["ckpt_name"], tiny(*CHECKPOINTS[inputs["ckpt_name"]]))
        if "vae_name" in inputs:
            vae = {k: v for k, v in tiny(*VAES[inputs["vae_name"]]).items() if k.startswith("first_stage_model.")}
            write_model("vae", inputs["vae_name"], vae)
        if "lora_name" in inputs:
            family, seed = LORAS[inputs["lora_name"]]
            parts = split_checkpoint(tiny(family, 0))
            text = {role: to_module_keys(part.state_dict) for role, part in parts.text_encoders.items()}
            lora = make_kohya_lora(parts.unet, text, seed=seed, conv=family == "sd15", ldm_names=family == "sdxl")
            write_model("loras", inputs["lora_name"], lora.state_dict)


def _images(app, run) -> list[np.ndarray]:
    out = []
    for ui in run.outcome.outputs.values():
        for item in ui.get("images", []):
            path = app.ctx.folders.type_dir(item["type"]) / item["subfolder"] / item["filename"]
            with Image.open(path) as image:
                out.append(np.asarray(image.convert("RGB"), dtype=np.float32))
    return out


def _neutral(prompt: dict) -> dict:
    """The same prompt with every LoRA at strength 0 and every merge keeping model1 alone."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs = node["inputs"]
        for name in ("strength_model", "strength_clip"):
            if name in inputs:
                inputs[name] = 0.0
        for name in ("ratio", "input", "middle", "out"):
            if node["class_type"].startswith("ModelMerge") and name in inputs:
                inputs[name] = 1.0
    return prompt


def _lcm_supported() -> bool:
    from nodes.sampling import SUPPORTED_SAMPLING
    return "lcm" in SUPPORTED_SAMPLING


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_runs_and_its_loras_or_merges_change_the_image(name, make_app, tiny, write_model, caplog):
    if name.startswith("lcm") and not _lcm_supported():
        pytest.skip("FOLLOW-UP: ModelSamplingDiscrete 'lcm' is not implemented by the sampling nodes yet; "
                    "its SDXL LoRA is covered by test_sdxl_kohya_lora_patches_every_module")
    prompt = _shrink(json.loads((EXAMPLES / f"{name}.api.json").read_text()))
    _write_files(prompt, tiny, write_model)
    app = make_app()
    with caplog.at_level(logging.WARNING, logger="nodes.lora"):
        run = app.run(prompt)
    assert "not loaded" not in caplog.text
    images = _images(app, run)
    assert len(images) == 1 and all(image.shape == (64, 64, 3) and image.std() > 1.0 for image in images)
    plain = _images(app, app.run(_neutral(prompt)))
    assert max(np.abs(a - b).max() for a, b in zip(images, plain)) > 1.0
    if name.startswith("model_merging"):
        # Under a device budget half the UNet's size the merged UNet streams, with the same pictures.
        unet_bytes = sum(v.numel() * 4 for k, v in tiny("sd15", 0).items() if k.startswith("model.diffusion_model."))
        small = make_app(vram_budget=unet_bytes // 2)
        assert all(np.array_equal(a, b) for a, b in zip(images, _images(small, small.run(prompt))))
        partial = [e for e in small.manager.events if e.kind == "partial" and e.model.endswith("(MODEL)")]
        assert partial and all(e.bytes <= unet_bytes // 2 for e in partial)


def test_sdxl_kohya_lora_patches_every_module(make_rt, load):
    """sd-scripts' SDXL layout: ldm UNet names (lora_unet_input_blocks_…), lora_te1_ / lora_te2_."""
    from nodes.lora import LoraLoader
    rt = make_rt()
    model, clip, _ = load(rt, "sdxl")
    text = {slot.key: slot.encoder.state_dict() for slot in clip.slots}
    lora = make_kohya_lora(model.base.unet.state_dict(), text, ldm_names=True, seed=4)
    assert any(k.startswith("lora_te2_") for k in lora.state_dict)
    write_file(lora.state_dict, rt.folders.models["loras"][0] / "sdxl_lora.safetensors")
    patched_model, patched_clip = LoraLoader().execute(model, clip, "sdxl_lora.safetensors", 0.5, 2.0, rt)
    assert set(patched_model.patches) == set(lora.unet_deltas)
    assert set(patched_clip.patches) == {f"{role}.{k}" for role, d in lora.clip_deltas.items() for k in d}
    originals, weights = rt.services.models.originals(model), rt.services.models.state_dict(patched_model)
    for key, delta in lora.unet_deltas.items():
        torch.testing.assert_close(weights[key], originals[key] + 0.5 * delta, atol=1e-6, rtol=1e-6)
    originals, weights = rt.services.models.originals(clip), rt.services.models.state_dict(patched_clip)
    key = "clip_g.transformer.encoder.layers.0.mlp.fc1.weight"
    torch.testing.assert_close(weights[key], originals[key] + 2.0 * lora.clip_deltas["clip_g"][key[7:]])
