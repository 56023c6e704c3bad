"""Discrete-time (DDPM) noise schedules and the σ grids ("schedulers") that samplers walk.

Everything uses k-diffusion's σ space: a noisy latent is x = x0 + σ·ε, and a denoiser maps
(x, σ) to a prediction of x0. A trained DDPM model only knows its 1000 training timesteps, so
`DiscreteSchedule` converts between σ and timestep and between the network's raw output
(ε, v or x0) and the denoised prediction. The scheduler functions reproduce ComfyUI's grids
bit for bit where float32 allows it: they use the same dtypes and operation order, because a
one-ulp change of σ can move the discrete timestep the network sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.stats
import torch
from torch import Tensor

SCHEDULER_NAMES: tuple[str, ...] = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)

# ComfyUI computes one extra step for these samplers and drops the penultimate σ, because
# their last step lands on a σ that is "almost zero" anyway (dpm_2 steps to a midpoint,
# uni_pc replaces the final 0 by 0.001).
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})

PREDICTION_TYPES = ("eps", "v_prediction", "x0")

# ᾱ of the last timestep after the zero-terminal-SNR rescale: exactly 0 would give σ = ∞.
_ZSNR_LAST_ALPHA_CUMPROD = 4.8973451890853435e-08


def beta_schedule(name: str, timesteps: int = 1000, linear_start: float = 0.00085,
                  linear_end: float = 0.012) -> np.ndarray:
    """Training β_t in float64.

    "linear" is ComfyUI's (and LDM's) name for what diffusers calls "scaled_linear": linear in
    √β. "sqrt_linear" is linear in β. "cosine" is the improved-DDPM schedule
    ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008, with β clipped at 0.999.
    """
    if name == "linear":
        return np.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=np.float64) ** 2
    if name == "sqrt_linear":
        return np.linspace(linear_start, linear_end, timesteps, dtype=np.float64)
    if name == "cosine":
        s = 8e-3
        f = np.cos((np.arange(timesteps + 1, dtype=np.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
        alphas_cumprod = f / f[0]
        return np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)
    raise ValueError(f"unknown beta schedule {name!r}")


def _rescale_zero_terminal_snr(sigmas: Tensor) -> Tensor:
    """Shift √ᾱ so the last timestep carries no signal, keeping √ᾱ_0 (Lin et al. 2023)."""
    sqrt_ac = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    alphas_cumprod = sqrt_ac ** 2
    alphas_cumprod[-1] = _ZSNR_LAST_ALPHA_CUMPROD
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


class DiscreteSchedule:
    """The σ table of a DDPM model plus the σ-space ↔ network conversions (ComfyUI's
    ModelSamplingDiscrete with the EPS / V_PREDICTION / X0 prediction mixins).

    σ is computed in float64 and stored as float32; log σ is taken in float64 before the cast
    (that is what ComfyUI stores, and it differs from log of the float32 σ in the last bit).
    """

    def __init__(self, prediction: str = "eps", *, beta_schedule_name: str = "linear",
                 linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000,
                 zsnr: bool = False, betas: np.ndarray | None = None) -> None:
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"prediction must be one of {PREDICTION_TYPES}, got {prediction!r}")
        self.prediction = prediction
        self.sigma_data = 1.0
        if betas is None:
            betas = beta_schedule(beta_schedule_name, timesteps, linear_start, linear_end)
        alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = _rescale_zero_terminal_snr(sigmas)
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    @property
    def sigma_min(self) -> Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Tensor:
        return self.sigmas[-1]

    # -- σ ↔ timestep ------------------------------------------------------------------------

    def timestep(self, sigma: Tensor) -> Tensor:
        """Nearest training timestep in log σ (int64). ComfyUI feeds this, as a float, to the
        network: it does not interpolate."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        dists = log_sigma.reshape(1, -1) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(log_sigma.shape)

    def timestep_continuous(self, sigma: Tensor) -> Tensor:
        """Fractional timestep, linear in log σ between neighbouring table entries (what
        diffusers and A1111's k-diffusion wrapper feed the network). Clamped to [0, T-1]."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        flat = log_sigma.reshape(-1)
        high = torch.searchsorted(self.log_sigmas, flat).clamp(1, len(self.log_sigmas) - 1)
        low = high - 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        w = ((flat - lo) / (hi - lo)).clamp(0, 1)
        return ((1 - w) * low + w * high).view(log_sigma.shape)

    def sigma(self, timestep: Tensor) -> Tensor:
        """σ at a (possibly fractional) timestep, interpolated linearly in log σ."""
        t = torch.as_tensor(timestep).float().clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """σ at a fraction of the sampling process (0 = start, 1 = end), used by timestep-range
        conditioning and SDE windows. Beyond the ends it returns "infinitely noisy" / 0."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    # -- network input / output -----------------------------------------------------------------

    def calculate_input(self, sigma: Tensor, x: Tensor) -> Tensor:
        """Scale σ-space x to the unit-variance (VP) input the network was trained on."""
        sigma = _per_sample(sigma, x)
        return x / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma: Tensor, model_output: Tensor, x: Tensor) -> Tensor:
        """Turn the network output into the x0 prediction (the "denoised" samplers consume)."""
        sigma = _per_sample(sigma, model_output)
        if self.prediction == "eps":
            return x - model_output * sigma
        if self.prediction == "v_prediction":
            sd2 = self.sigma_data ** 2
            return x * sd2 / (sigma ** 2 + sd2) - model_output * sigma * self.sigma_data / (sigma ** 2 + sd2) ** 0.5
        return model_output

    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent: Tensor, max_denoise: bool = False) -> Tensor:
        """Starting x for a sampler. At the top of the schedule the noise is scaled by
        √(1+σ²) instead of σ: then x/√(1+σ²) is exactly unit variance, as in DDPM."""
        sigma = _per_sample(sigma, noise)
        scale = torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else sigma
        return noise * scale + latent

    def inverse_noise_scaling(self, sigma: Tensor, latent: Tensor) -> Tensor:
        """Identity for discrete DDPM models (flow models would undo their interpolation here)."""
        return latent

    def is_max_denoise(self, sigmas: Tensor) -> bool:
        """Whether a grid starts at (or above) the model's σ_max, i.e. from pure noise."""
        max_sigma, sigma = float(self.sigma_max), float(sigmas[0])
        return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma


def _per_sample(sigma: Tensor, like: Tensor) -> Tensor:
    """Reshape a scalar or per-batch σ so it broadcasts over a [B, ...] tensor."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.view(sigma.shape[:1] + (1,) * (like.ndim - 1))


# -- schedulers: σ grids of length steps+1 ending in 0 ---------------------------------------------

def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5: uniform in σ^(1/ρ), which packs steps near σ_min."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Uniform in log σ."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """log σ follows ramp^ρ from log σ_max to log σ_min (ρ = 1 is `exponential`)."""
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def vp_sigmas(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> Tensor:
    """σ of the continuous VP-SDE (Song et al. 2021) at t uniform in [1, eps_s]:
    σ(t)² = exp(β_d·t²/2 + β_min·t) − 1."""
    t = torch.linspace(1, eps_s, n)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t ** 2 / 2 + beta_min * t)))


def laplace_sigmas(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> Tensor:
    """log σ drawn through the inverse CDF of a Laplace(μ, b) at uniform quantiles (Hang et
    al. 2024), which concentrates steps around σ = e^μ; clamped to [σ_min, σ_max]."""
    eps = 1e-5  # keeps the log finite at the end points
    x = torch.linspace(0, 1, n)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + eps)
    return _append_zero(torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max))


def kl_optimal_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Uniform in arctan σ ("Align Your Steps"' KL-optimal schedule)."""
    frac = torch.arange(n, dtype=torch.float32).div_(n - 1)
    sigmas = frac.new_zeros(n + 1)
    sigmas[:-1] = (frac * math.atan(sigma_min) + (1 - frac) * math.atan(sigma_max)).tan_()
    return sigmas


def normal_sigmas(ms: DiscreteSchedule, steps: int, sgm: bool = False) -> Tensor:
    """Timesteps linear from T-1 to 0 mapped to σ (log-interpolated); append 0.

    `sgm` (sgm_uniform) spaces steps+1 points and drops the last, so the final non-zero σ stays
    above σ_min. If σ(t=0) is already 0 (zero-terminal schedules flipped) the grid takes one
    more point instead of appending 0."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigmas = ms.sigma(timesteps)
    return _append_zero(sigmas) if append_zero else sigmas


def simple_sigmas(ms: DiscreteSchedule, steps: int) -> Tensor:
    """Every (T/steps)-th table entry counted from the top; append 0."""
    stride = len(ms.sigmas) / steps
    idx = [-(1 + int(k * stride)) for k in range(steps)]
    return _append_zero(ms.sigmas[idx].clone())


def ddim_uniform_sigmas(ms: DiscreteSchedule, steps: int) -> Tensor:
    """CompVis DDIM's "uniform" timesteps 1, 1+c, 1+2c, … (c = T // steps), top first.

    Like CompVis, this yields more steps than asked when T % steps ≠ 0 (6 → 7). A zero σ at
    timestep 1 (possible only for odd schedules) replaces the appended 0."""
    stride = max(len(ms.sigmas) // steps, 1)
    idx = list(range(1, len(ms.sigmas), stride))
    sigmas = ms.sigmas[idx].flip(0)
    if math.isclose(float(ms.sigmas[1]), 0, abs_tol=0.00001):
        return sigmas
    return _append_zero(sigmas)


def beta_sigmas(ms: DiscreteSchedule, steps: int, alpha: float = 0.6, beta: float = 0.6) -> Tensor:
    """Timesteps at the quantiles of a Beta(α, β) distribution (Lee et al. 2024), which puts
    more steps at both ends; repeated timesteps are dropped."""
    total = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * total)
    kept = [int(t) for k, t in enumerate(timesteps) if k == 0 or t != timesteps[k - 1]]
    return _append_zero(ms.sigmas[kept].clone())


def linear_quadratic_sigmas(ms: DiscreteSchedule, steps: int, threshold_noise: float = 0.025,
                            linear_steps: int | None = None) -> Tensor:
    """Mochi's schedule on s = 1 − σ/σ_max: s rises linearly to `threshold_noise` over the first
    half of the steps, then follows the quadratic that continues it with matching slope (C¹)
    and reaches 1 at the last step."""
    if steps == 1:
        s = [1.0, 0.0]
    else:
        n = steps
        lin = n // 2 if linear_steps is None else linear_steps
        slope = threshold_noise / lin
        quad = n - lin
        # q(i) = a·i² + b·i + c with q(lin) = threshold, q'(lin) = slope and q(n) = 1.
        a = (lin - threshold_noise * n) / (lin * quad ** 2)
        b = slope - 2 * a * lin
        c = a * lin ** 2
        schedule = [i * slope for i in range(lin)] + [a * i * i + b * i + c for i in range(lin, n)] + [1.0]
        s = [1.0 - v for v in schedule]
    return torch.tensor(s, dtype=torch.float32) * ms.sigma_max


SchedulerFn = Callable[[DiscreteSchedule, int], Tensor]

SCHEDULERS: dict[str, SchedulerFn] = {
    "simple": simple_sigmas,
    "sgm_uniform": lambda ms, steps: normal_sigmas(ms, steps, sgm=True),
    "karras": lambda ms, steps: karras_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max)),
    "exponential": lambda ms, steps: exponential_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max)),
    "ddim_uniform": ddim_uniform_sigmas,
    "beta": beta_sigmas,
    "normal": normal_sigmas,
    "linear_quadratic": linear_quadratic_sigmas,
    "kl_optimal": lambda ms, steps: kl_optimal_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max)),
}
assert tuple(SCHEDULERS) == SCHEDULER_NAMES


def calculate_sigmas(ms: DiscreteSchedule, scheduler: str, steps: int) -> Tensor:
    """The σ grid of a named scheduler (float32, CPU)."""
    try:
        fn = SCHEDULERS[scheduler]
    except KeyError:
        raise ValueError(f"unknown scheduler {scheduler!r}; expected one of {SCHEDULER_NAMES}") from None
    return fn(ms, steps)


def ksampler_sigmas(ms: DiscreteSchedule, scheduler: str, steps: int, denoise: float | None = 1.0,
                    sampler: str | None = None) -> Tensor:
    """The grid the KSampler node hands to its sampler.

    denoise < 1 (img2img) builds the schedule for int(steps/denoise) steps and keeps its last
    steps+1 values, so the run starts part-way down; denoise ≤ 0 gives an empty grid (nothing to
    do). Samplers in DISCARD_PENULTIMATE_SIGMA_SAMPLERS get one more step with the penultimate
    σ removed."""
    def grid(n: int) -> Tensor:
        if sampler in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            sigmas = calculate_sigmas(ms, scheduler, n + 1)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return calculate_sigmas(ms, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return grid(steps)  # untruncated: ddim_uniform may return more than steps+1 values
    if denoise <= 0.0:
        return torch.zeros(0)
    return grid(int(steps / denoise))[-(steps + 1):]


def basic_scheduler_sigmas(ms: DiscreteSchedule, scheduler: str, steps: int, denoise: float = 1.0) -> Tensor:
    """BasicScheduler node: like KSampler's grid but without the sampler-specific σ drop, and
    any denoise below 1.0 (not 0.9999) truncates."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0)
        total = int(steps / denoise)
    return calculate_sigmas(ms, scheduler, total)[-(steps + 1):]


def sd_turbo_sigmas(ms: DiscreteSchedule, steps: int, denoise: float = 1.0) -> Tensor:
    """SDTurboScheduler: SD-Turbo was distilled on timesteps 999, 899, …, 99; denoise skips the
    top ones."""
    start = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
    return _append_zero(ms.sigma(timesteps))


def split_steps(sigmas: Tensor, start_step: int | None = None, last_step: int | None = None,
                force_full_denoise: bool = False) -> Tensor:
    """KSamplerAdvanced's start/end window. `last_step` cuts the grid (its final σ is forced to
    0 when `force_full_denoise`); a `start_step` at or past the end gives an empty grid, for
    which `sample` returns the input latent untouched."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            sigmas = sigmas[:0]
    return sigmas
