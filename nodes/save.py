"""CheckpointSave: MODEL + CLIP + VAE (patches applied: LoRAs and merges baked in) as one ldm
single-file ``.safetensors`` in output/ (spec comfy_api.md §9.7): ``<prefix>_<counter:05>_.safetensors``
with the counter scheme of SaveImage, metadata ``prompt``, one key per ``extra_pnginfo`` entry and
``modelspec.*`` (left out with --disable-metadata)."""
from __future__ import annotations

import json
from typing import Any

from safetensors.torch import save_file

from diffusion.checkpoint_save import modelspec_metadata, single_file_state_dict
from model_management.folders import PathRefused, contained
from model_management.handles import ClipHandle, ModelHandle, VaeHandle
from model_management.patcher import effective_state_dict
from nodes.imageutil import SAVE_OUTSIDE, save_target
from nodes.runtime import NodeRuntime
from nodes.schema import Node, Socket, String


def checkpoint_dict(model: ModelHandle | None, clip: ClipHandle | None, vae: VaeHandle | None) -> dict:
    """The ldm single-file dict of whatever components are given, with their patches applied."""
    family = model.family if model is not None else clip.family if clip is not None else "sd1"
    text: dict[str, dict] = {}
    if clip is not None:
        weights = effective_state_dict(clip)
        for slot in clip.slots:
            prefix = f"{slot.key}."
            text[slot.key] = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    v_prediction = model is not None and model.denoiser.schedule.prediction == "v_prediction"
    return single_file_state_dict(family, None if model is None else effective_state_dict(model),
                                  None if vae is None else effective_state_dict(vae), text, v_prediction)


class CheckpointSave(Node):
    CATEGORY = "advanced/model_merging"
    OUTPUT_NODE = True
    INPUTS = (
        Socket("MODEL", "model"),
        Socket("CLIP", "clip"),
        Socket("VAE", "vae"),
        String("filename_prefix", "checkpoints/ComfyUI"),
    )
    HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

    def execute(self, model: ModelHandle, clip: ClipHandle | None, vae: VaeHandle | None, filename_prefix: str,
                rt: NodeRuntime, prompt: dict | None = None, extra_pnginfo: dict | None = None) -> dict:
        target = save_target(rt.folders.output, filename_prefix, 0, 0)
        name = f"{target.filename}_{target.counter:05}_.safetensors"
        try:
            path = contained(target.folder, name)
        except PathRefused as exc:
            raise PathRefused(f"{SAVE_OUTSIDE} {exc}") from None
        metadata: dict[str, Any] | None = None
        if not rt.services.disable_metadata:
            metadata = modelspec_metadata(model.family, target.filename)
            if prompt is not None:
                metadata["prompt"] = json.dumps(prompt)
            metadata.update({k: json.dumps(v) for k, v in (extra_pnginfo or {}).items()})
        weights = {k: v.detach().contiguous().cpu() for k, v in checkpoint_dict(model, clip, vae).items()}
        save_file(weights, str(path), metadata=metadata)
        return {}


NODE_CLASS_MAPPINGS = {"CheckpointSave": CheckpointSave}
NODE_DISPLAY_NAME_MAPPINGS = {"CheckpointSave": "Save Checkpoint"}
