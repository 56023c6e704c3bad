"""Where the randomness of a sampling run comes from, drawn exactly as ComfyUI draws it.

Seeds are reproducible across machines only because ComfyUI draws everything from torch's CPU
generator (mt19937) and moves it to the device afterwards. We call the same generator with the
same shapes in the same order, so the streams are bit-identical; we use private generators
instead of reseeding torch's global one, which gives the same numbers without side effects.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torchsde
from torch import Tensor

# (σ, σ_next) -> a standard-normal tensor shaped like the latent.
NoiseSampler = Callable[[Tensor, Tensor], Tensor]

_SEED_MODULUS = 2 ** 64  # ComfyUI seeds go up to 0xffffffffffffffff; seed+1 must wrap, not fail

# torchsde rounds the tree's end points, so queries exactly at σ_min / σ_max (every SDE run makes
# them) warn and are clamped onto the rounded ends. Harmless, and not actionable by users.
warnings.filterwarnings("ignore", message=r"Should have (ta|tb)(>=t0|<=t1) but got", category=UserWarning,
                        module=r"torchsde\.")


def cpu_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator. torch's mt19937 only uses the low 32 bits of the seed."""
    return torch.Generator("cpu").manual_seed(seed % _SEED_MODULUS)


def prepare_noise(latent: Tensor, seed: int, batch_index: Sequence[int] | None = None) -> Tensor:
    """The initial noise of a KSampler run.

    One randn of the whole latent shape, so batch item i depends on its position in the stream
    (not on seed+i). With `batch_index` (latents split or repeated from a batch) items are drawn
    one at a time up to the largest index and picked, so a sub-batch gets the noise it would
    have had in the full batch."""
    generator = cpu_generator(seed)
    if batch_index is None:
        return torch.randn(latent.shape, dtype=latent.dtype, generator=generator)
    item_shape = (1, *latent.shape[1:])
    draws = [torch.randn(item_shape, dtype=latent.dtype, generator=generator) for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index], dim=0)


def default_noise_sampler(x: Tensor, seed: int | None = None) -> NoiseSampler:
    """Per-step noise of ancestral / stochastic samplers: one randn(x.shape) per call.

    ComfyUI seeds this generator with seed+1 on CPU but with seed on other devices, so results
    differ between CPU and GPU runs; we keep that. Without a seed it uses torch's global RNG."""
    if seed is None:
        generator = None
    else:
        generator = torch.Generator(x.device).manual_seed((seed + 1 if x.device.type == "cpu" else seed) % _SEED_MODULUS)

    def sample(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)

    return sample


class BrownianTreeNoiseSampler:
    """Noise for SDE samplers from one Brownian path W(σ) (torchsde's BrownianTree).

    A call for (σ, σ_next) returns (W(σ_next) − W(σ))/√|σ_next − σ|, a standard normal. Because
    every call queries the same path, the noise of sub-steps (e.g. dpmpp_sde's midpoint) is
    correlated the way the SDE requires, and the result barely depends on the step count.

    The tree covers [σ_min, σ_max] (smallest non-zero and largest σ of the grid) and is seeded
    with `entropy = seed`; one tree spans the whole batch. `cpu=True` builds and queries it on
    the CPU (ComfyUI's default samplers), `cpu=False` on x's device (the `_gpu` samplers).
    """

    def __init__(self, x: Tensor, sigma_min: Tensor | float, sigma_max: Tensor | float,
                 seed: int | None = None, cpu: bool = True) -> None:
        self.device = torch.device("cpu") if cpu else x.device
        t0, t1 = sorted((torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)), key=float)
        if seed is None:
            seed = int(torch.randint(0, 2 ** 63 - 1, []))
        self.tree = torchsde.BrownianTree(
            t0.to(self.device), torch.zeros_like(x, device=self.device), t1.to(self.device), entropy=seed)
        self.out_device = x.device

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        t0, t1 = torch.as_tensor(sigma).to(self.device), torch.as_tensor(sigma_next).to(self.device)
        lo, hi, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        w = self.tree(lo.float(), hi.float()).to(t0.dtype) * sign
        return (w / (t1 - t0).abs().sqrt()).to(self.out_device)


def brownian_noise_sampler(x: Tensor, sigmas: Tensor, seed: int | None, cpu: bool = True) -> BrownianTreeNoiseSampler:
    """The Brownian sampler ComfyUI's SDE samplers build for a grid."""
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed, cpu=cpu)
