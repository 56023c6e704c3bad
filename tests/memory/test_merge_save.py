"""Model / CLIP merging nodes as patches (the formulas of nodes/merge.py on the loaded weights) and
CheckpointSave: an ldm single file that loads back with the patched (merged, LoRA'd) weights."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from nodes.lora import LoraLoader
from nodes.loaders import CheckpointLoaderSimple
from nodes.merge import (SDXL_BLOCKS, CLIPMergeAdd, CLIPMergeSimple, CLIPMergeSubtract, ModelMergeAdd,
                         ModelMergeBlocks, ModelMergeSDXL, ModelMergeSimple, ModelMergeSubtract)
from nodes.save import CheckpointSave


@pytest.fixture
def pair(make_rt, load):
    rt = make_rt()
    (m1, c1, v1), (m2, c2, _) = load(rt, "sd15", 0), load(rt, "sd15", 1)
    return rt, m1, c1, v1, m2, c2


def weights(handle) -> dict[str, torch.Tensor]:
    return handle.manager.state_dict(handle)


def test_model_merges_follow_their_formulas(pair):
    rt, m1, _, _, m2, _ = pair
    w1, w2 = weights(m1), weights(m2)
    cases = [
        (ModelMergeSimple().execute(m1, m2, 0.3)[0], lambda a, b, k: 0.3 * a + 0.7 * b),
        (ModelMergeAdd().execute(m1, m2)[0], lambda a, b, k: a + b),
        (ModelMergeSubtract().execute(m1, m2, 2.5)[0], lambda a, b, k: 2.5 * (a - b)),
        (ModelMergeBlocks().execute(m1, m2, 0.2, 0.5, 0.9)[0],
         lambda a, b, k: (r := 0.5 if k.startswith("middle") else 0.9 if k.startswith("out") else 0.2) * a
         + (1 - r) * b),
    ]
    for merged, formula in cases:
        got = weights(merged)
        for key in ("input_blocks.1.1.proj_in.weight", "middle_block.0.in_layers.2.weight", "out.2.bias",
                    "output_blocks.3.1.proj_out.bias", "time_embed.0.weight"):
            torch.testing.assert_close(got[key], formula(w1[key], w2[key], key), atol=1e-6, rtol=1e-6)
    assert weights(m1).keys() == w1.keys() and all(torch.equal(weights(m1)[k], w1[k]) for k in w1)


def test_merging_a_lorad_model_merges_its_patched_weights(pair, kohya_lora, write_model):
    rt, m1, c1, _, m2, c2 = pair
    lora = kohya_lora(m2, c2)
    name = write_model("loras", "merge_lora.safetensors", lora.state_dict)
    m2_lora, _ = LoraLoader().execute(m2, c2, name, 1.0, 1.0, rt)
    merged = ModelMergeSimple().execute(m1, m2_lora, 0.5)[0]
    key = next(iter(lora.unet_deltas))
    torch.testing.assert_close(weights(merged)[key], 0.5 * weights(m1)[key] + 0.5 * weights(m2_lora)[key],
                               atol=1e-6, rtol=1e-6)


def test_sdxl_block_merge_uses_each_blocks_ratio(make_rt, load):
    rt = make_rt()
    (m1, _, _), (m2, _, _) = load(rt, "sdxl", 0), load(rt, "sdxl", 1)
    ratios = {name: round(0.03 * i, 2) for i, name in enumerate(SDXL_BLOCKS)}
    merged = ModelMergeSDXL().execute(m1, m2, **ratios)[0]
    w1, w2, got = weights(m1), weights(m2), weights(merged)
    for key, ratio in (("time_embed.0.weight", ratios["time_embed."]), ("label_emb.0.0.weight", ratios["label_emb."]),
                       ("input_blocks.1.0.in_layers.2.weight", ratios["input_blocks.1"]),
                       ("middle_block.1.proj_in.weight", ratios["middle_block.1"]),
                       ("output_blocks.2.0.skip_connection.weight", ratios["output_blocks.2"]),
                       ("out.2.weight", ratios["out."])):
        torch.testing.assert_close(got[key], ratio * w1[key] + (1 - ratio) * w2[key], atol=1e-6, rtol=1e-6)


def test_clip_merges(pair):
    rt, _, c1, _, _, c2 = pair
    w1, w2 = weights(c1), weights(c2)
    key = "clip_l.transformer.encoder.layers.1.mlp.fc1.weight"
    for node, formula in ((CLIPMergeSimple().execute(c1, c2, 0.25)[0], 0.25 * w1[key] + 0.75 * w2[key]),
                          (CLIPMergeAdd().execute(c1, c2)[0], w1[key] + w2[key]),
                          (CLIPMergeSubtract().execute(c1, c2, 0.5)[0], 0.5 * (w1[key] - w2[key]))):
        torch.testing.assert_close(weights(node)[key], formula, atol=1e-6, rtol=1e-6)
        assert not any(k.endswith(".position_ids") for k in node.patches)


def test_checkpoint_save_round_trips_the_merged_model(pair, memory_base):
    rt, m1, c1, v1, m2, c2 = pair
    merged = ModelMergeSimple().execute(m1, m2, 0.4)[0]
    clip = CLIPMergeSimple().execute(c1, c2, 0.6)[0]
    prompt = {"1": {"class_type": "CheckpointSave", "inputs": {}}}
    assert CheckpointSave().execute(merged, clip, v1, "checkpoints/merged", rt, prompt=prompt,
                                    extra_pnginfo={"workflow": {"nodes": []}}) == {}
    path = memory_base / "output" / "checkpoints" / "merged_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        keys = set(f.keys())
    assert json.loads(metadata["prompt"]) == prompt and json.loads(metadata["workflow"]) == {"nodes": []}
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "cond_stage_model"}
    assert "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight" in keys
    # it is a checkpoint like any other: put it where the loader looks and compare every weight
    target = memory_base / "models" / "checkpoints" / "merged_saved.safetensors"
    target.write_bytes(path.read_bytes())
    model, clip_back, vae = CheckpointLoaderSimple().execute("merged_saved.safetensors", rt)
    for original, loaded in ((merged, model), (clip, clip_back), (v1, vae)):
        want, got = weights(original), weights(loaded)
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want)
    CheckpointSave().execute(merged, clip, v1, "checkpoints/merged", rt)
    assert (memory_base / "output" / "checkpoints" / "merged_00002_.safetensors").exists()
