"""Running a sampler on a MODEL handle: the glue between handles and `diffusion.samplers.sample`.

The MODEL's memory manager loads the UNet (with its weight patches) for the run's working memory, and
every tensor of the run goes to the model's load device. Both prompts become cond entries (area, mask,
timestep range, SDXL and inpainting inputs), the latent's noise mask is fitted to the latent, and the
results come back as float32 CPU latents, as every LATENT holds. The SAMPLER, GUIDER and NOISE values of the
custom-sampling nodes are the small dataclasses below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diffusion.conditioning import MODEL_COND_BATCHER, cond_entries, latent_mask
from diffusion.guidance import CFGDenoiser
from diffusion.noise import prepare_noise
from diffusion.samplers import sample
from model_management.handles import ModelHandle

Conditioning = Sequence[Sequence[Any]]
# (step index, total steps, x0 estimate in model space) after each step; raising interrupts the run.
StepCallback = Callable[[int, int, Tensor], None]


@dataclass(frozen=True)
class SamplerChoice:
    """A SAMPLER value: a sampler name of `diffusion.samplers.SAMPLERS` and options for it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Guider:
    """A GUIDER value: a model with the prompts and CFG scale it is guided by (no negative: cfg 1)."""

    model: ModelHandle
    positive: Conditioning
    negative: Conditioning = ()
    cfg: float = 1.0


@dataclass(frozen=True)
class NoiseSource:
    """A NOISE value: the seed's CPU noise for a latent (zeros when disabled); the seed also seeds the
    samplers' per-step noise."""

    seed: int = 0
    enabled: bool = True

    def generate(self, latent: dict) -> Tensor:
        samples = latent["samples"]
        if not self.enabled:
            return torch.zeros(samples.shape, dtype=samples.dtype)
        return prepare_noise(samples, self.seed, latent.get("batch_index"))


@dataclass(frozen=True)
class SampleResult:
    samples: Tensor  # raw latent, float32 on the CPU
    denoised: Tensor | None  # the last step's x0 estimate as a raw latent (None if no step ran)


def run_sampler(guider: Guider, sampler: SamplerChoice, sigmas: Tensor, latent: dict, noise: Tensor, seed: int,
                on_step: StepCallback | None = None) -> SampleResult:
    """Sample `latent` (a LATENT dict: samples, optional noise_mask) along `sigmas` with `noise`, with the
    model loaded (and patched) by its memory manager for the run's working memory."""
    model = guider.model
    samples = latent["samples"]
    branches = 1 if math.isclose(guider.cfg, 1.0) else 2  # cond and uncond share each UNet call
    shape = (branches * samples.shape[0], model.base.unet.config.in_channels, *samples.shape[-2:])
    return model.run(lambda: _run_loaded(guider, sampler, sigmas, latent, noise, seed, on_step),
                     model.working_memory(shape))


@torch.no_grad()
def _run_loaded(guider: Guider, sampler: SamplerChoice, sigmas: Tensor, latent: dict, noise: Tensor, seed: int,
                on_step: StepCallback | None) -> SampleResult:
    denoiser = guider.model.denoiser
    device = guider.model.load_device
    fmt = denoiser.latent_format
    samples = latent["samples"].to(device=device, dtype=torch.float32)
    mask = latent.get("noise_mask")
    mask = None if mask is None else latent_mask(mask, samples)
    model_latent = fmt.process_in(samples)  # the image a 9-channel inpainting model sees
    entries = [cond_entries(denoiser, conditioning, samples, latent_image=model_latent, denoise_mask=mask)
               for conditioning in (guider.positive, guider.negative)]
    model = CFGDenoiser(denoiser.apply, entries[0], entries[1], guider.cfg, batcher=MODEL_COND_BATCHER)
    last: list[Tensor] = []

    def callback(step: int, denoised: Tensor, x: Tensor, total: int) -> None:
        last[:] = [denoised]
        if on_step is not None:
            on_step(step, total, denoised)

    out = sample(model, denoiser.schedule, noise.to(device=device, dtype=torch.float32), samples,
                 sigmas.to(device=device, dtype=torch.float32), sampler.name, seed=seed, callback=callback,
                 denoise_mask=mask, latent_format=fmt, sampler_options=sampler.options)
    denoised = fmt.process_out(last[0]).float().cpu() if last else None
    return SampleResult(out.float().cpu(), denoised)
