"""Latent spaces: how raw VAE latents map to what the diffusion model works in, and to preview colours.

A LATENT value holds *raw* VAE latents. The denoiser works on `process_in(raw) = raw·scale` and the
sampler hands back `process_out(z) = z/scale` (spec §7.8); the VAE never applies the scale itself.

Previews ("latent2rgb") are a linear projection of one latent cell to RGB in the decoder's [-1, 1]
range. The spec gives no factor tables, so they are fitted from the VAE that decodes the latents
(`fit_rgb_projection`): a least-squares fit of the decoder's output, averaged over each latent cell's
pixels, against the latent values. A format without factors has no latent2rgb preview.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

# Model-space value of an all-grey (0.5) image, per channel, used as the masked image of a
# 9-channel inpainting model when no mask is given (spec §7.9).
SD_GREY_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


@dataclass(frozen=True)
class LatentFormat:
    """One latent space. `rgb_factors` is [channels][3] on raw latents, `rgb_bias` [3]."""

    name: str
    scale_factor: float
    channels: int = 4
    rgb_factors: tuple[tuple[float, ...], ...] | None = None
    rgb_bias: tuple[float, ...] | None = None

    def process_in(self, latent: Tensor) -> Tensor:
        """Raw VAE latent → model space."""
        return latent * self.scale_factor

    def process_out(self, latent: Tensor) -> Tensor:
        """Model space → raw VAE latent."""
        return latent / self.scale_factor

    def with_rgb(self, factors: Tensor, bias: Tensor) -> LatentFormat:
        return replace(self, rgb_factors=tuple(tuple(r) for r in factors.tolist()), rgb_bias=tuple(bias.tolist()))

    def preview_rgb(self, latent: Tensor) -> Tensor | None:
        """[B, C, h, w] model-space latent → [B, h, w, 3] RGB in [0, 1], or None without factors."""
        if self.rgb_factors is None:
            return None
        factors = torch.tensor(self.rgb_factors, dtype=torch.float32, device=latent.device)
        bias = torch.tensor(self.rgb_bias, dtype=torch.float32, device=latent.device)
        rgb = torch.einsum("bchw,cr->bhwr", self.process_out(latent.float()), factors) + bias
        return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


SD15 = LatentFormat("sd15", 0.18215)
SDXL = LatentFormat("sdxl", 0.13025)

# Model family (diffusion.checkpoint_keys.ModelFamily.name) → latent space.
FAMILY_FORMATS = {"sd1": SD15, "sd2": SD15, "sdxl": SDXL, "sdxl_refiner": SDXL}


def fit_rgb_projection(decode: Callable[[Tensor], Tensor], fmt: LatentFormat, downscale: int,
                       cells: int = 8, seed: int = 0) -> LatentFormat:
    """`fmt` with latent2rgb factors fitted to a decoder ([0, 1] pixels out).

    Decodes one random raw latent of `cells`×`cells` (unit variance in model space), averages each
    cell's `downscale`² pixels in the decoder's [-1, 1] range and solves rgb ≈ latent·A + b."""
    generator = torch.Generator().manual_seed(seed)
    raw = fmt.process_out(torch.randn(1, fmt.channels, cells, cells, generator=generator))
    with torch.no_grad():
        pixels = decode(raw).float().cpu()
    target = F.avg_pool2d(pixels * 2.0 - 1.0, downscale)  # [1, 3, cells, cells]
    inputs = torch.cat([raw.flatten(2)[0].T, torch.ones(cells * cells, 1)], dim=1)  # [N, C+1]
    solution = torch.linalg.lstsq(inputs.double(), target.flatten(2)[0].T.double()).solution.float()
    if not torch.isfinite(solution).all():  # e.g. a VAE that overflows in its dtype: no preview rather than NaN
        return fmt
    return fmt.with_rgb(solution[:-1], solution[-1])
