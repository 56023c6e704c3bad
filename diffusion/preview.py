"""Live sampling previews: the current x0 estimate as a small RGB picture (spec comfy_api §4.12).

"latent2rgb" projects each latent cell linearly to RGB with the latent format's factors (fitted to the
checkpoint's VAE when it was loaded, see latent_formats) and maps [-1, 1] to 0..255, one pixel per latent
cell. Only the first batch item is shown. "auto" means latent2rgb; "taesd" falls back to latent2rgb, since
no TAESD decoder is implemented (ComfyUI does the same when the decoder file is missing).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .latent_formats import LatentFormat

PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")


def wants_preview(method: str) -> bool:
    return method in PREVIEW_METHODS and method != "none"


@torch.no_grad()
def latent_preview(denoised: Tensor, latent_format: LatentFormat) -> np.ndarray | None:
    """[B, C, h, w] model-space latents → uint8 RGB [h, w, 3] of the first item, or None when the
    format has no RGB factors."""
    rgb = latent_format.preview_rgb(denoised[:1])
    if rgb is None:
        return None
    return (rgb[0] * 255.0).round().to(torch.uint8).cpu().numpy()
