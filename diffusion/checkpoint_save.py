"""Components → one ldm single-file checkpoint (the inverse of `checkpoint_keys.split_checkpoint`).

UNet under ``model.diffusion_model.``, VAE under ``first_stage_model.``, text encoders under the
family's prefix of `checkpoint_keys.TEXT_ENCODER_PREFIXES` in that prefix's layout (HF for CLIP-L,
open_clip for ViT-H and bigG). An SDXL-family v-prediction model gets the ``v_pred`` marker key. The
metadata carries a few ``modelspec.*`` keys naming the architecture.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
from torch import Tensor

from .checkpoint_keys import TEXT_ENCODER_PREFIXES, UNET_PREFIX, VAE_PREFIX
from .keymaps_clip import hf_to_open_clip, module_to_hf

# Which TEXT_ENCODER_PREFIXES entry each family's encoder is saved under.
SAVE_PREFIXES = {
    ("sd1", "clip_l"): "cond_stage_model.transformer.",
    ("sd2", "clip_h"): "cond_stage_model.model.",
    ("sdxl", "clip_l"): "conditioner.embedders.0.transformer.",
    ("sdxl", "clip_g"): "conditioner.embedders.1.model.",
    ("sdxl_refiner", "clip_g"): "conditioner.embedders.0.model.",
}
LAYOUTS = {prefix: layout for prefix, _, layout in TEXT_ENCODER_PREFIXES}
ARCHITECTURES = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-768-v",
                 "sdxl": "stable-diffusion-xl-v1-base", "sdxl_refiner": "stable-diffusion-xl-v1-refiner"}


def single_file_state_dict(family: str, unet: Mapping[str, Tensor] | None, vae: Mapping[str, Tensor] | None,
                           text_encoders: Mapping[str, Mapping[str, Tensor]], v_prediction: bool = False) \
        -> dict[str, Tensor]:
    """The checkpoint dict: `text_encoders` maps a role (clip_l / clip_h / clip_g) to a
    `ClipTextEncoder` state dict; absent components are left out."""
    out: dict[str, Tensor] = {}
    for prefix, part in ((UNET_PREFIX, unet), (VAE_PREFIX, vae)):
        out.update({prefix + k: v for k, v in (part or {}).items()})
    for role, weights in text_encoders.items():
        prefix = SAVE_PREFIXES.get((family, role))
        if prefix is None:
            raise ValueError(f"a {family} checkpoint has no place for a {role} text encoder")
        hf = module_to_hf(weights)
        saved = hf_to_open_clip(hf) if LAYOUTS[prefix] == "open_clip" else hf
        out.update({prefix + k: v for k, v in saved.items()})
    if v_prediction and family.startswith("sdxl"):
        out["v_pred"] = torch.tensor([])
    return out


def modelspec_metadata(family: str, title: str) -> dict[str, str]:
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": ARCHITECTURES.get(family, family),
            "modelspec.implementation": "sgm", "modelspec.title": title,
            "modelspec.date": time.strftime("%Y-%m-%d")}
