"""A model workflow through the real executor: loaders, conditioning and latent nodes get their runtime,
validate against folder listings and hand MODEL / CLIP / VAE / CONDITIONING / LATENT values along."""
from __future__ import annotations

import asyncio

from execution.cache import CachePolicy
from execution.executor import Executor
from execution.validate import validate_prompt
from nodes.registry import NodeRegistry


def test_checkpoint_workflow_runs(services, write_checkpoint):
    name = write_checkpoint("sdxl")
    services.folders.ensure(clean_temp=False)
    registry = NodeRegistry(services)
    registry.load_builtins()
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "2": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}},
        "3": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["2", 0], "width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
            "target_height": 1024, "text_g": "a (red:1.2) cat", "text_l": "a cat"}},
        "4": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "6": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["5", 0], "upscale_method": "bislerp",
                                                          "scale_by": 1.5}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "tiny"}},
        "9": {"class_type": "VAEEncode", "inputs": {"pixels": ["7", 0], "vae": ["1", 2]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }
    checked = validate_prompt(prompt, registry, None)
    assert checked.ok, checked.body()
    executor = Executor(registry, services, CachePolicy.parse("classic"))
    events: list = []
    targets = [*checked.outputs, "4"]  # the conditioning branch has no output node without a sampler
    outcome = asyncio.run(executor.run("p", prompt, {}, targets, lambda e, d: events.append((e, d))))
    assert outcome.status == "success", outcome.terminal
    ran = {d["node"] for e, d in events if e == "executing"}
    assert {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"} <= ran
    images = outcome.outputs["8"]["images"]
    assert len(images) == 2 and all(i["filename"].startswith("tiny") for i in images)
    assert (services.folders.output / images[0]["filename"]).stat().st_size > 0
    assert outcome.outputs["11"]["images"][0]["type"] == "temp"
