"""The denoiser: a UNet with its noise schedule, latent space and extra conditioning inputs.

Samplers see a diffusion model as D(x, σ, cond) → x0 ("denoised"), in the k-diffusion convention
x = x0 + σ·ε on *model-space* latents (raw VAE latents × the latent scale, see `latent_formats`).
A sampler uses a `Denoiser` in two steps:

1. ``cond = denoiser.make_cond(context, options, x, latent_image=..., denoise_mask=...)`` once per
   conditioning entry and sampling run. ``context`` is the CONDITIONING tensor [1|B, T, C] and
   ``options`` its dict (``pooled_output``, SDXL ``width``/``height``/``crop_w``/``crop_h``/
   ``target_width``/``target_height``, refiner ``aesthetic_score``/``prompt_type``, inpainting
   ``concat_latent_image``/``concat_mask``); ``x`` is a tensor shaped like the sampled latent (batch,
   size, device). ``latent_image`` is the model-space input latent and ``denoise_mask`` the latent's
   noise mask [B|1, 1, h, w] (1 = regenerate); both feed only 9-channel inpainting models. The result
   is a `ModelCond` with everything broadcast to the batch: context, the SDXL vector ``y`` (spec §7.7)
   and the inpainting channels ``concat`` (spec §7.9).
2. ``denoised = denoiser.apply(x, sigma, cond)`` per model call. ``sigma`` is a scalar or [B]. This is
   `diffusion.guidance.Predict`. Set ``cond.control`` (`unet.ControlResiduals`) per call for ControlNets.

``apply`` follows spec §7.1: x_in = x/√(σ²+1), concat channels appended after scaling, the nearest
integer training timestep as a float, the network output turned into x0 per the prediction type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .latent_formats import SD_GREY_LATENT, LatentFormat
from .schedules import DiscreteSchedule
from .unet import ControlResiduals, UNetModel, timestep_embedding

LATENT_DOWNSCALE = 8  # pixels per latent cell of the SD VAEs; SDXL's default size conditioning uses it
ADM_EMBED_DIM = 256  # width of each size / crop / score embedding in the SDXL vector
# Families whose UNet takes a vector y, and the number of 256-wide embeddings after the pooled text.
ADM_EMBEDDINGS = {"sdxl": 6, "sdxl_refiner": 5}
# Refiner aesthetic score when a conditioning does not set one (spec §7.7).
AESTHETIC_POSITIVE, AESTHETIC_NEGATIVE = 6.0, 2.5


@dataclass
class ModelCond:
    """Inputs for one conditioning, already broadcast to the sampled batch (see the module docstring)."""

    context: Tensor
    y: Tensor | None = None
    concat: Tensor | None = None
    control: ControlResiduals | None = None


def _to_batch(tensor: Tensor, batch: int) -> Tensor:
    """Repeat (cycling) or cut along dim 0 to `batch` rows."""
    if tensor.shape[0] == batch:
        return tensor
    repeats = -(-batch // tensor.shape[0])
    return tensor.repeat((repeats,) + (1,) * (tensor.ndim - 1))[:batch]


def _resize_to(tensor: Tensor, like: Tensor) -> Tensor:
    if tensor.shape[-2:] == like.shape[-2:]:
        return tensor
    return F.interpolate(tensor, size=tuple(like.shape[-2:]), mode="bilinear")


@dataclass(frozen=True)
class Denoiser:
    """A UNet, the σ schedule it was trained with, its latent space and its family.

    Immutable apart from the UNet's weights; `with_schedule` / `with_latent_format` give views that
    share the UNet (how model-sampling overrides are applied to a cloned model)."""

    unet: UNetModel
    schedule: DiscreteSchedule
    latent_format: LatentFormat
    family: str  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner"

    def __post_init__(self) -> None:
        config = self.unet.config
        if config.adm_in_channels is not None and self.family not in ADM_EMBEDDINGS:
            raise ValueError(f"a {self.family} UNet with vector conditioning ({config.adm_in_channels} wide) "
                             "is not supported")
        if config.in_channels not in (self.latent_channels, 2 * self.latent_channels + 1):
            raise ValueError(f"UNet input of {config.in_channels} channels is not supported (expected "
                             f"{self.latent_channels}, or {2 * self.latent_channels + 1} for inpainting)")

    @property
    def latent_channels(self) -> int:
        return self.unet.config.out_channels

    @property
    def inpaint(self) -> bool:
        """Takes [noisy latent, mask, masked-image latent] channels (spec §7.9)."""
        return self.unet.config.in_channels == 2 * self.latent_channels + 1

    def with_schedule(self, schedule: DiscreteSchedule) -> Denoiser:
        return replace(self, schedule=schedule)

    def with_latent_format(self, latent_format: LatentFormat) -> Denoiser:
        return replace(self, latent_format=latent_format)

    # -- conditioning ------------------------------------------------------------------------------

    def make_cond(self, context: Tensor, options: Mapping[str, Any], x: Tensor, *,
                  latent_image: Tensor | None = None, denoise_mask: Tensor | None = None,
                  control: ControlResiduals | None = None) -> ModelCond:
        """The model inputs for one CONDITIONING entry (see the module docstring)."""
        batch = x.shape[0]
        y = self.adm_vector(options, x)
        concat = self.inpaint_channels(options, x, latent_image, denoise_mask) if self.inpaint else None
        return ModelCond(
            context=_to_batch(context, batch).to(x.device),
            y=None if y is None else _to_batch(y, batch).to(x.device),
            concat=concat,
            control=control,
        )

    def adm_vector(self, options: Mapping[str, Any], x: Tensor) -> Tensor | None:
        """SDXL's y: pooled text ‖ 256-wide embeddings of the size / crop / aesthetic numbers (spec §7.7).

        Missing sizes default to the latent's pixel size (height and width of ``x`` × 8), missing crops
        to 0, missing targets to the size, a missing pooled output to zeros."""
        count = ADM_EMBEDDINGS.get(self.family)
        if count is None:
            return None
        pooled_width = self.unet.config.adm_in_channels - count * ADM_EMBED_DIM
        pooled = options.get("pooled_output")
        if pooled is None:
            pooled = torch.zeros(1, pooled_width)
        if pooled.shape[-1] != pooled_width:
            raise ValueError(f"pooled text output is {pooled.shape[-1]} wide, this model expects {pooled_width}")
        height = options.get("height", x.shape[-2] * LATENT_DOWNSCALE)
        width = options.get("width", x.shape[-1] * LATENT_DOWNSCALE)
        numbers = [height, width, options.get("crop_h", 0), options.get("crop_w", 0)]
        if self.family == "sdxl":
            numbers += [options.get("target_height", height), options.get("target_width", width)]
        else:
            negative = options.get("prompt_type") == "negative"
            numbers.append(options.get("aesthetic_score", AESTHETIC_NEGATIVE if negative else AESTHETIC_POSITIVE))
        embedded = timestep_embedding(torch.tensor(numbers, dtype=torch.float32), ADM_EMBED_DIM).reshape(1, -1)
        pooled = pooled.float().cpu()
        return torch.cat([pooled, embedded.expand(pooled.shape[0], -1)], dim=1)

    def inpaint_channels(self, options: Mapping[str, Any], x: Tensor, latent_image: Tensor | None,
                         denoise_mask: Tensor | None) -> Tensor:
        """[mask (1), masked-image latent (C)] for a 9-channel inpainting UNet (spec §7.9).

        ``concat_latent_image`` / ``concat_mask`` in the conditioning (raw latent / pixel-size mask) win
        over the sampled latent and its noise mask. The mask is resized bilinearly to the latent and
        rounded; with no mask at all the mask is 1 and the image the constant grey latent."""
        batch = x.shape[0]
        mask = options.get("concat_mask", denoise_mask)
        image = options.get("concat_latent_image")
        image = latent_image if image is None else self.latent_format.process_in(image)
        if mask is None:
            mask = torch.ones_like(x[:, :1])
            grey = torch.tensor(SD_GREY_LATENT[: self.latent_channels], dtype=x.dtype, device=x.device)
            image = grey.view(1, -1, 1, 1).expand_as(x)
        else:
            mask = mask.to(x).reshape(-1, 1, *mask.shape[-2:])
            mask = _to_batch(_resize_to(mask, x).round(), batch)
            if image is None:
                raise ValueError("an inpainting model with a noise mask needs the input latent image")
            image = _to_batch(_resize_to(image.to(x), x), batch)
        return torch.cat([mask, image], dim=1)

    # -- the model call ----------------------------------------------------------------------------

    def apply(self, x: Tensor, sigma: Tensor | float, cond: ModelCond) -> Tensor:
        """Denoised prediction (x0) for model-space latents ``x`` at noise level ``sigma``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        x_in = self.schedule.calculate_input(sigma, x)
        if cond.concat is not None:
            x_in = torch.cat([x_in, cond.concat.to(x_in)], dim=1)
        timestep = self.schedule.timestep(sigma.detach().cpu()).to(x.device).float()
        y = None if cond.y is None else cond.y.to(x.device)
        out = self.unet(x_in, timestep, cond.context.to(x.device), y, cond.control).float()
        return self.schedule.calculate_denoised(sigma, out, x)
