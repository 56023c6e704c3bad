"""Samplers: ODE/SDE solvers that walk a σ grid from noise to data, in k-diffusion's σ space.

Every sampler is one function `sample_<name>(model, x, sigmas, extra_args=None, callback=None,
**options) -> x` where `model(x, σ·1_B, **extra_args)` returns the denoised (x0) prediction and
`sigmas` is a decreasing grid, usually ending in 0. Notation in the docstrings: σ = sigmas[i],
σ' = sigmas[i+1], D = model(x, σ), d = (x − D)/σ (the ODE slope dx/dσ), λ = −ln σ (half log-SNR;
α ≡ 1 because DDPM models are run in σ space). `extra_args["seed"]` seeds the per-step noise.

`callback` receives {"x", "i", "sigma", "sigma_hat", "denoised"} once per step before the step
is taken; it may raise to interrupt the run. `SAMPLERS` maps ComfyUI's sampler names to the
functions; `sample` is what the KSampler node calls.

The formulas follow the spec and the published papers; where ComfyUI deviates (e.g. returning D
on the last step), we follow ComfyUI, since matching its images is the point. Parity with
ComfyUI is verified (reference trajectories, 1e-5) for euler, euler_ancestral, heun, dpm_2,
dpm_2_ancestral, lms, dpmpp_2s_ancestral, dpmpp_sde, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde, ddpm,
lcm, ipndm, deis, uni_pc, uni_pc_bh2 and ddim; the `_gpu` variants and dpmpp_2m_sde_heun share
their code. The other samplers are checked analytically only (convergence order, exactness,
noise variance); their docstrings name the specific doubts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .noise import NoiseSampler, brownian_noise_sampler, cpu_generator, default_noise_sampler
from .schedules import DiscreteSchedule
from .uni_pc import sample_uni_pc

Denoiser = Callable[..., Tensor]  # model(x, sigma[B], **extra_args) -> denoised
Callback = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """Slope of the probability-flow ODE dx/dσ = (x − D)/σ (the predicted noise)."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step σ → σ' into a deterministic step to σ_down and fresh noise of std σ_up, with
    σ_down² + σ_up² = σ'². η = 1 is DDPM's posterior variance, η = 0 a deterministic step."""
    if not eta:
        return sigma_to, torch.zeros_like(torch.as_tensor(sigma_to))
    sigma_up = torch.minimum(torch.as_tensor(sigma_to),
                             eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _lambda(sigma: Tensor) -> Tensor:
    """λ = −ln σ (+∞ at σ = 0)."""
    return sigma.log().neg()


def _sigma(lam: Tensor) -> Tensor:
    return lam.neg().exp()


def _ei_phi_1(t: Tensor) -> Tensor:
    """t·φ₁(t) = e^t − 1: weight of a constant D over an exponential-integrator step."""
    return torch.expm1(t)


def _ei_phi_2(t: Tensor) -> Tensor:
    """t·φ₂(t) = (e^t − 1 − t)/t: weight of D's linear trend over the step."""
    return (torch.expm1(t) - t) / t


def _denoise(model: Denoiser, x: Tensor, sigma: Tensor, extra_args: dict[str, Any]) -> Tensor:
    return model(x, sigma * x.new_ones([x.shape[0]]), **extra_args)


def _call_with_uncond(model: Denoiser, x: Tensor, sigma_b: Tensor, extra_args: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """(guided, unconditional) predictions for the cfg++ samplers. A denoiser without guidance
    (no `with_uncond`) is its own unconditional prediction."""
    both = getattr(model, "with_uncond", None)
    if both is None:
        denoised = model(x, sigma_b, **extra_args)
        return denoised, denoised
    return both(x, sigma_b, **extra_args)


def _denoise_with_uncond(model: Denoiser, x: Tensor, sigma: Tensor, extra_args: dict[str, Any]) -> tuple[Tensor, Tensor]:
    return _call_with_uncond(model, x, sigma * x.new_ones([x.shape[0]]), extra_args)


def _report(callback: Callback | None, i: int, x: Tensor, sigma: Tensor, denoised: Tensor,
            sigma_hat: Tensor | None = None) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                  "denoised": denoised})


def _noise_term(sigma_to: Tensor, h_eta_part: Tensor, noise: Tensor, s_noise: float) -> Tensor:
    """Noise of a data-prediction SDE step over λ-length h·η: σ_to·√(1 − e^{−2hη})·N(0,1)."""
    return sigma_to * (-2 * h_eta_part).expm1().neg().sqrt() * noise * s_noise


def _noise_sampler(noise_sampler: NoiseSampler | None, x: Tensor, extra_args: dict[str, Any]) -> NoiseSampler:
    return default_noise_sampler(x, seed=extra_args.get("seed")) if noise_sampler is None else noise_sampler


def _brownian_sampler(noise_sampler: NoiseSampler | None, x: Tensor, sigmas: Tensor,
                      extra_args: dict[str, Any], cpu_noise: bool) -> NoiseSampler:
    if noise_sampler is not None:
        return noise_sampler
    return brownian_noise_sampler(x, sigmas, seed=extra_args.get("seed"), cpu=cpu_noise)


def _churn(x: Tensor, sigmas: Tensor, i: int, s_churn: float, s_tmin: float, s_tmax: float,
           s_noise: float, noise_sampler: NoiseSampler) -> tuple[Tensor, Tensor]:
    """Karras et al.'s "churn": raise σ to σ̂ = σ(1+γ) by adding fresh noise before the step.
    Off by default (s_churn = 0). ComfyUI draws this noise from torch's global RNG; we draw it
    from the sampler's seeded noise source."""
    sigma = sigmas[i]
    gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_churn > 0 and s_tmin <= sigma <= s_tmax else 0.0
    if gamma == 0:
        return x, sigma
    sigma_hat = sigma * (gamma + 1)
    return x + noise_sampler(sigma, sigma_hat) * s_noise * (sigma_hat ** 2 - sigma ** 2) ** 0.5, sigma_hat


def _lagrange_integrals(nodes: Sequence[float], a: float, b: float) -> list[float]:
    """∫_a^b ℓ_j(τ) dτ for the Lagrange basis polynomials ℓ_j of `nodes` (float64, exact):
    the weights of an Adams–Bashforth step with arbitrary spacing."""
    out = []
    for j, node in enumerate(nodes):
        others = [n for k, n in enumerate(nodes) if k != j]
        poly = np.poly(others) / np.prod([node - n for n in others]) if others else np.array([1.0])
        antiderivative = np.polyint(poly)
        out.append(float(np.polyval(antiderivative, b) - np.polyval(antiderivative, a)))
    return out


# ---------------------------------------------------------------------------------------------
# Euler / Heun family
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_euler(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                 callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = float("inf"), s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Euler's method on the probability-flow ODE: x ← x + d·(σ' − σ) (Karras et al. 2022, Alg. 2
    with optional churn)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        _report(callback, i, x, sigmas[i], denoised, sigma_hat)
        x = x + to_d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                        callback: Callback | None = None) -> Tensor:
    """Euler with CFG++ (Chung et al. 2024): step to the guided D but re-noise along the
    unconditional slope, x ← D + σ'·(x − D_u)/σ. Use with a low cfg (≈ 0.5–2)."""
    extra_args = {} if extra_args is None else extra_args
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        x = denoised + to_d(x, sigmas[i], uncond) * sigmas[i + 1]
    return x


@torch.no_grad()
def sample_euler_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                           callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                           noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Ancestral Euler: an Euler step to σ_down, then fresh noise of std σ_up (see
    `get_ancestral_step`). When σ_down = 0 (last step) the result is D."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                                  callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                                  noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Ancestral Euler with CFG++: x ← D + σ_down·(x − D_u)/σ + σ_up·noise; D on the last step."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Heun's method (Karras et al. 2022, Alg. 2): average the slopes at both ends of an Euler
    step. The step to σ' = 0 stays Euler (the slope at σ = 0 is undefined), so 2N−1 calls."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, i, x, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], _denoise(model, x_2, sigmas[i + 1], extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_heunpp2(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                   callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                   s_tmax: float = float("inf"), s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """"Heun++": chains Euler predictions to the next two grid points and averages the three
    slopes with weights proportional to σ/σ_0 (w₂ = σ'/3σ_0, w₃ = σ''/3σ_0, w₁ = 1 − w₂ − w₃);
    Heun-like with two slopes when only one point is left and Euler on the final step.

    No paper defines it (it comes from an A1111 extension); weights as in ComfyUI's heunpp2,
    parity not covered by the reference vectors."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, i, x, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], _denoise(model, x_2, sigmas[i + 1], extra_args))
        if sigmas[i + 2] == s_end:
            w_2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w_2) + d_2 * w_2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], _denoise(model, x_3, sigmas[i + 2], extra_args))
            w_2 = sigmas[i + 1] / (3 * sigmas[0])
            w_3 = sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt
    return x


@torch.no_grad()
def sample_dpm_2(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                 callback: Callback | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = float("inf"), s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """DPM-Solver-2 in Karras's σ form: the midpoint method with the midpoint taken in log σ,
    σ_mid = √(σσ'). Euler on the step to 0."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, i, x, sigmas[i], denoised, sigma_hat)
        x = _dpm_2_step(model, x, d, sigma_hat, sigmas[i + 1], extra_args)
    return x


def _dpm_2_step(model: Denoiser, x: Tensor, d: Tensor, sigma: Tensor, sigma_to: Tensor,
                extra_args: dict[str, Any]) -> Tensor:
    """One midpoint step from σ to σ_to given the slope d at σ (Euler when σ_to = 0)."""
    if sigma_to == 0:
        return x + d * (sigma_to - sigma)
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, _denoise(model, x_2, sigma_mid, extra_args))
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                           callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                           noise_sampler: NoiseSampler | None = None) -> Tensor:
    """The dpm_2 midpoint step aimed at σ_down, then fresh noise of std σ_up."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, sigmas[i], denoised)
        x = _dpm_2_step(model, x, to_d(x, sigmas[i], denoised), sigmas[i], sigma_down, extra_args)
        if sigma_down != 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


# ---------------------------------------------------------------------------------------------
# Linear multistep (Adams–Bashforth) family
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_lms(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
               callback: Callback | None = None, order: int = 4) -> Tensor:
    """Linear multistep in σ: x ← x + Σ_j c_j·d_{i−j}, c_j = ∫_σ^σ' ℓ_j(τ)dτ over the Lagrange
    basis of the last ≤ `order` grid points (Adams–Bashforth for uneven steps). The last step
    returns D. (ComfyUI integrates c_j numerically; the polynomial integral here is exact.)"""
    extra_args = {} if extra_args is None else extra_args
    nodes = sigmas.double().tolist()
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        history = [nodes[i - j] for j in range(len(ds))]  # newest first
        coeffs = _lagrange_integrals(history, nodes[i], nodes[i + 1])
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


_IPNDM_COEFFS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


@torch.no_grad()
def sample_ipndm(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                 callback: Callback | None = None, max_order: int = 4) -> Tensor:
    """Improved PNDM (Zhang & Chen 2023, DEIS paper): Adams–Bashforth on d with the fixed
    uniform-step coefficients, order warming up 1 → 4; the last step returns D."""
    extra_args = {} if extra_args is None else extra_args
    ds: list[Tensor] = []  # newest first
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        ds = ([to_d(x, sigmas[i], denoised)] + ds)[:max_order]
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        coeffs = _IPNDM_COEFFS[len(ds) - 1]
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(c * d for c, d in zip(coeffs, ds))
    return x


@torch.no_grad()
def sample_ipndm_v(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                   callback: Callback | None = None, max_order: int = 4) -> Tensor:
    """iPNDM with variable step sizes: the Adams–Bashforth weights recomputed for the actual σ
    spacing, which is the linear multistep rule of `sample_lms` (order ≤ 4, D on the last step).

    ComfyUI writes these weights in closed form; the spec does not give them, so exact parity
    with ComfyUI is unverified."""
    return sample_lms(model, x, sigmas, extra_args=extra_args, callback=callback, order=max_order)


def _deis_coefficients(sigmas: Tensor, max_order: int, n_points: int = 10_000) -> list[list[float]]:
    """DEIS "tab" weights (Zhang & Chen 2023): d is extrapolated with a Lagrange polynomial in
    VP-SDE time τ and integrated against dσ/dτ by a rectangle rule with `n_points` points.

    τ(σ) comes from a VP-SDE fitted to σ(τ=1e-3) = 0.002 and σ(1) = 80 (EDM's range, independent
    of the model): log(1+σ²) = β_d·τ²/2 + β_min·τ."""
    eps_s, sigma_lo, sigma_hi = 1e-3, 0.002, 80.0
    beta_d = 2 * (math.log(sigma_lo ** 2 + 1) / eps_s - math.log(sigma_hi ** 2 + 1)) / (eps_s - 1)
    beta_min = math.log(sigma_hi ** 2 + 1) - 0.5 * beta_d
    s = sigmas.detach().cpu().double()
    taus = ((beta_min ** 2 + 2 * beta_d * torch.log1p(s ** 2)).sqrt() - beta_min) / beta_d
    coeffs: list[list[float]] = []
    for i in range(len(sigmas) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] == 0:  # these steps are Euler
            coeffs.append([])
            continue
        t_cur, t_next = taus[i], taus[i + 1]
        tau = torch.linspace(float(t_cur), float(t_next), n_points, dtype=torch.float64)
        alpha_bar = torch.exp(-0.5 * beta_d * tau ** 2 - beta_min * tau)
        dsigma_dtau = 0.5 * (beta_d * tau + beta_min) / torch.sqrt(alpha_bar * (1 - alpha_bar))
        nodes = [taus[i - k] for k in range(order)]
        step = []
        for j in range(order):
            basis = torch.ones_like(tau)
            for k in range(order):
                if k != j:
                    basis = basis * (tau - nodes[k]) / (nodes[j] - nodes[k])
            step.append(float((dsigma_dtau * basis).sum() * (t_next - t_cur) / n_points))
        coeffs.append(step)
    return coeffs


@torch.no_grad()
def sample_deis(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                callback: Callback | None = None, max_order: int = 3) -> Tensor:
    """DEIS multistep (Zhang & Chen 2023, "tab" variant): x ← x + Σ_j c_j·d_{i−j} with
    `_deis_coefficients`; Euler on the first and last steps."""
    extra_args = {} if extra_args is None else extra_args
    coeffs = _deis_coefficients(sigmas, max_order)
    ds: list[Tensor] = []  # newest first
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        ds = ([to_d(x, sigmas[i], denoised)] + ds)[:max_order]
        _report(callback, i, x, sigmas[i], denoised)
        if coeffs[i]:
            x = x + sum(c * d for c, d in zip(coeffs[i], ds))
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * ds[0]
    return x


# ---------------------------------------------------------------------------------------------
# DPM-Solver (noise prediction, Lu et al. 2022): dpm_fast and dpm_adaptive
# ---------------------------------------------------------------------------------------------

class _DPMSolver:
    """Single-step DPM-Solver-1/2/3 in λ = −ln σ, noise-prediction form:
    x_t = x_s − σ_t·(e^h − 1)·ε_s + (higher-order ε differences). Model calls are cached per
    step so the embedded lower-order solution (dpm_adaptive) reuses them."""

    def __init__(self, model: Denoiser, extra_args: dict[str, Any]) -> None:
        self.model = model
        self.extra_args = extra_args

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, lam: Tensor) -> Tensor:
        if key not in cache:
            sigma = _sigma(lam)
            cache[key] = (x - _denoise(self.model, x, sigma, self.extra_args)) / sigma
        return cache[key]

    def step_1(self, x: Tensor, s: Tensor, t: Tensor, cache: dict[str, Tensor]) -> Tensor:
        return x - _sigma(t) * (t - s).expm1() * self.eps(cache, "eps", x, s)

    def step_2(self, x: Tensor, s: Tensor, t: Tensor, cache: dict[str, Tensor], r1: float = 1 / 2) -> Tensor:
        h = t - s
        eps = self.eps(cache, "eps", x, s)
        s1 = s + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t) * h.expm1() * eps - _sigma(t) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x: Tensor, s: Tensor, t: Tensor, cache: dict[str, Tensor],
               r1: float = 1 / 3, r2: float = 2 / 3) -> Tensor:
        h = t - s
        eps = self.eps(cache, "eps", x, s)
        s1, s2 = s + r1 * h, s + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - _sigma(s2) * (r2 * h).expm1() * eps
              - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t) * h.expm1() * eps - _sigma(t) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral_target(self, s: Tensor, t: Tensor, t_end: Tensor, eta: float) -> tuple[Tensor, Tensor]:
        """Where the deterministic part of a step s → t lands, and the std of the noise added."""
        if not eta:
            return t, torch.zeros(())
        sigma_down, _ = get_ancestral_step(_sigma(s), _sigma(t), eta)
        t_down = torch.minimum(t_end, _lambda(sigma_down))
        return t_down, (_sigma(t) ** 2 - _sigma(t_down) ** 2) ** 0.5


def _dpm_solver_range(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """DPM-Solver cannot reach σ = 0: it runs from σ_max to the last non-zero σ of the grid and
    returns x there (so its output keeps that little noise, as in ComfyUI)."""
    if len(sigmas) < 2:
        raise ValueError("dpm_fast/dpm_adaptive need at least two sigmas")
    sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    return _lambda(sigmas[0]), _lambda(sigma_min)


@torch.no_grad()
def sample_dpm_fast(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                    callback: Callback | None = None, eta: float = 0.0, s_noise: float = 1.0,
                    noise_sampler: NoiseSampler | None = None) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, §3.4): the grid only sets the end points and the budget
    of N = len(sigmas)−1 model calls; it takes ⌊N/3⌋+1 steps uniform in λ, all third order
    except the last one or two (orders …, 3, 2, 1 if 3 | N, else …, 3, N mod 3)."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    t_start, t_end = _dpm_solver_range(sigmas)
    nfe = len(sigmas) - 1
    m = nfe // 3 + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    solver = _DPMSolver(model, extra_args)
    for i, order in enumerate(orders):
        cache: dict[str, Tensor] = {}
        t, t_next = ts[i], ts[i + 1]
        t_down, su = solver.ancestral_target(t, t_next, t_end, eta)
        eps = solver.eps(cache, "eps", x, t)
        _report(callback, i, x, _sigma(t), x - _sigma(t) * eps)
        x = (solver.step_1, solver.step_2, solver.step_3)[order - 1](x, t, t_down, cache)
        if eta:
            x = x + su * s_noise * noise_sampler(_sigma(t), _sigma(t_next))
    return x


class _PIDStepSizeController:
    """Step-size control from the error estimate of an embedded pair (Söderlind's PI/PID
    filter with an arctan limiter), as in DPM-Solver's adaptive solver."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float, eps: float = 1e-8) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                        callback: Callback | None = None, order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                        h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                        accept_safety: float = 0.81, eta: float = 0.0, s_noise: float = 1.0,
                        noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Adaptive-step DPM-Solver (Lu et al. 2022, §3.4 / App. C): an embedded (order−1, order)
    pair gives the local error, scaled by max(atol, rtol·|x|) as in Jolicoeur-Martineau et al.
    2021, which sets the next step in λ. Only the grid's end points are used; the number of
    model calls is not fixed. Ends at the last non-zero σ like dpm_fast."""
    if len(sigmas) <= 1:
        return x
    if order not in (2, 3):
        raise ValueError("order should be 2 or 3")
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    s, t_end = _dpm_solver_range(sigmas)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    pid = _PIDStepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    solver = _DPMSolver(model, extra_args)
    x_prev = x
    step = 0
    while s < t_end - 1e-5:
        cache: dict[str, Tensor] = {}
        t = torch.minimum(t_end, s + pid.h)
        t_down, su = solver.ancestral_target(s, t, t_end, eta)
        eps = solver.eps(cache, "eps", x, s)
        _report(callback, step, x, _sigma(s), x - _sigma(s) * eps)
        if order == 2:
            x_low = solver.step_1(x, s, t_down, cache)
            x_high = solver.step_2(x, s, t_down, cache)
        else:
            x_low = solver.step_2(x, s, t_down, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, t_down, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high
            if eta:
                x = x + su * s_noise * noise_sampler(_sigma(s), _sigma(t))
            s = t
        step += 1
    return x


# ---------------------------------------------------------------------------------------------
# DPM-Solver++ family (data prediction, Lu et al. 2022b)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_dpmpp_2s_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                              callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                              noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Ancestral DPM-Solver++(2S): a two-stage step (model at the λ-midpoint) to σ_down, then
    noise of std σ_up; Euler on the last step."""
    return _dpmpp_2s_ancestral(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, cfg_pp=False)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                                     callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                                     noise_sampler: NoiseSampler | None = None) -> Tensor:
    """CFG++ version of dpmpp_2s_ancestral: both stages start from x + (D − D_u), i.e. re-noise
    along the unconditional prediction of the step's first call (Chung et al. 2024). Without
    guidance (D_u = D) it is exactly dpmpp_2s_ancestral. Parity with ComfyUI is unverified."""
    return _dpmpp_2s_ancestral(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, cfg_pp=True)


def _dpmpp_2s_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None,
                        callback: Callback | None, eta: float, s_noise: float,
                        noise_sampler: NoiseSampler | None, cfg_pp: bool) -> Tensor:
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        denoised, uncond = (_denoise_with_uncond(model, x, sigmas[i], extra_args) if cfg_pp
                            else (_denoise(model, x, sigmas[i], extra_args),) * 2)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, sigmas[i], denoised)
        if sigma_down == 0:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _lambda(sigmas[i]), _lambda(sigma_down)
            h = t_next - t
            s = t + h / 2
            base = x + (denoised - uncond) if cfg_pp else x
            x_2 = (_sigma(s) / _sigma(t)) * base - (-h / 2).expm1() * denoised
            denoised_2 = _denoise(model, x_2, _sigma(s), extra_args)
            x = (_sigma(t_next) / _sigma(t)) * base - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                     callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                     noise_sampler: NoiseSampler | None = None, r: float = 1 / 2, cpu_noise: bool = True) -> Tensor:
    """DPM-Solver++ SDE, two stages per step: an ancestral DPM-Solver++(1) step to
    σ₁ = e^{−(λ + r·h)} with the model evaluated there, then a step to σ' with
    D_d = (1 − 1/2r)·D + (1/2r)·D(x₂, σ₁). Noise from a Brownian tree, so the two stages share one
    noise path. D on the last step. `cpu_noise=False` is the `_gpu` variant."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _brownian_sampler(noise_sampler, x, sigmas, extra_args, cpu_noise)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = lambda_t - lambda_s
        sigma_s1 = _sigma(lambda_s + r * h)

        x_2 = _dpmpp_ancestral_substep(x, sigmas[i], sigma_s1, denoised, eta, s_noise, noise_sampler)
        denoised_2 = _denoise(model, x_2, sigma_s1, extra_args)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = _dpmpp_ancestral_substep(x, sigmas[i], sigmas[i + 1], denoised_d, eta, s_noise, noise_sampler)
    return x


def _dpmpp_ancestral_substep(x: Tensor, sigma: Tensor, sigma_to: Tensor, denoised: Tensor, eta: float,
                             s_noise: float, noise_sampler: NoiseSampler) -> Tensor:
    """DPM-Solver++(1) from σ to σ_down, then noise σ_up·N(0,1) queried for (σ, σ_to)."""
    sigma_down, sigma_up = get_ancestral_step(sigma, sigma_to, eta)
    h_ = _lambda(sigma_down) - _lambda(sigma)
    x = (-h_).exp() * x - (-h_).expm1() * denoised
    if eta > 0 and s_noise > 0:
        x = x + noise_sampler(sigma, sigma_to) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                    callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M): exponential integrator in λ with D extrapolated linearly from the
    previous step, D_d = (1 + 1/2r)·D − (1/2r)·D_prev, r = h_prev/h. First-order on the first
    step and on the step to 0 (which yields D)."""
    extra_args = {} if extra_args is None else extra_args
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        t, t_next = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            r = (t - _lambda(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                           callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M) with CFG++: x ← D + e^{−h}·(x − D_u) − (e^{−h} − 1)/(2r)·(D − D_u,prev); the
    first step and the step to 0 drop the correction."""
    extra_args = {} if extra_args is None else extra_args
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        t, t_next = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = t_next - t
        mix = -torch.exp(-h) * uncond
        if old_uncond is not None and sigmas[i + 1] != 0:
            r = (t - _lambda(sigmas[i - 1])) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                        callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: NoiseSampler | None = None, solver_type: str = "midpoint",
                        cpu_noise: bool = True) -> Tensor:
    """DPM-Solver++(2M) SDE: x ← (σ'/σ)e^{−ηh}·x + (1 − e^{−(1+η)h})·D + correction + noise
    σ'·√(1 − e^{−2ηh}). The correction uses (D − D_prev)/r, weighted ½(1 − e^{−h_η}) ("midpoint")
    or (1 − (1 − e^{−h_η})/h_η) ("heun"). Brownian-tree noise; D on the last step."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    return _dpmpp_multistep_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, cpu_noise,
                                max_history=1, solver_type=solver_type)


@torch.no_grad()
def sample_dpmpp_3m_sde(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                        callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: NoiseSampler | None = None, cpu_noise: bool = True) -> Tensor:
    """DPM-Solver++(3M) SDE: the 2M-SDE step with a quadratic extrapolation of D from two
    previous steps, x += φ₂·d₁ − φ₃·d₂ with φ₂ = (e^{−h_η} − 1)/h_η + 1, φ₃ = φ₂/h_η − ½ (the
    2M "heun" form while only one history point exists). Brownian-tree noise; D on the last step."""
    return _dpmpp_multistep_sde(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, cpu_noise,
                                max_history=2, solver_type="heun")


def _dpmpp_multistep_sde(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None,
                         callback: Callback | None, eta: float, s_noise: float, noise_sampler: NoiseSampler | None,
                         cpu_noise: bool, max_history: int, solver_type: str) -> Tensor:
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _brownian_sampler(noise_sampler, x, sigmas, extra_args, cpu_noise)
    history: list[tuple[Tensor, Tensor]] = []  # (D, h) of previous steps, newest first
    h = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _lambda(sigmas[i + 1]) - _lambda(sigmas[i])
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * denoised
            if len(history) >= 2 and max_history >= 2:
                (d_1, h_1), (d_2, h_2) = history[0], history[1]
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif history:
                d_1, h_1 = history[0]
                r = h_1 / h
                if solver_type == "heun":
                    x = x + ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - d_1)
                else:
                    x = x + 0.5 * (-h_eta).expm1().neg() * (1 / r) * (denoised - d_1)
            if eta > 0 and s_noise > 0:
                x = x + _noise_term(sigmas[i + 1], h * eta, noise_sampler(sigmas[i], sigmas[i + 1]), s_noise)
        history = [(denoised, h)] + history[:max_history - 1]
    return x


# ---------------------------------------------------------------------------------------------
# Exponential-integrator single-step family: SEEDS, exponential Heun
# ---------------------------------------------------------------------------------------------

def _extend_path_noise(noise: Tensor | None, length: Tensor, noise_sampler: NoiseSampler,
                       sigma_from: Tensor, sigma_to: Tensor) -> Tensor:
    """Accumulated noise (in units of the current σ) of one Brownian path, carried over a
    further λ-segment of length `length` (already × η): the earlier part decays by e^{−length}
    and fresh noise restores the variance to 1 − e^{−2·total length}. Multi-stage SDE steps
    (SEEDS) use this so their stages see increments of the same path. The fresh draw is taken
    even for an empty segment, which keeps the random stream aligned with ComfyUI."""
    fresh = (-2 * length).expm1().neg().sqrt() * noise_sampler(sigma_from, sigma_to)
    if noise is None:
        return fresh
    if length == 0:
        return noise
    return noise * (-length).exp() + fresh


@torch.no_grad()
def sample_seeds_2(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                   callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                   noise_sampler: NoiseSampler | None = None, r: float = 0.5, solver_type: str = "phi_1") -> Tensor:
    """SEEDS-2 (Gonzalez et al. 2023, data prediction): a stochastic exponential step to
    λ_s + r·h, a model call there, then the full step with D from both calls: "phi_1" uses
    lerp(D, D₂, 1/2r) under φ₁, "phi_2" the linear-trend form b₁·D + b₂·D₂ with b₂ = h·φ₂/r.
    The final step's noise continues the stage's Brownian path. D on the last step."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        sigma_s1 = _sigma(torch.lerp(lambda_s, lambda_t, r))

        x_2 = sigma_s1 / sigmas[i] * (-r * h * eta).exp() * x - _ei_phi_1(-r * h_eta) * denoised
        if noisy:
            path = _extend_path_noise(None, r * h * eta, noise_sampler, sigmas[i], sigma_s1)
            x_2 = x_2 + path * sigma_s1 * s_noise
        denoised_2 = _denoise(model, x_2, sigma_s1, extra_args)

        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x
        if solver_type == "phi_1":
            x = x - _ei_phi_1(-h_eta) * torch.lerp(denoised, denoised_2, 1 / (2 * r))
        else:
            b2 = _ei_phi_2(-h_eta) / r
            b1 = _ei_phi_1(-h_eta) - b2
            x = x - (b1 * denoised + b2 * denoised_2)
        if noisy:
            path = _extend_path_noise(path, (1 - r) * h * eta, noise_sampler, sigma_s1, sigmas[i + 1])
            x = x + path * sigmas[i + 1] * s_noise
    return x


@torch.no_grad()
def sample_seeds_3(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                   callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                   noise_sampler: NoiseSampler | None = None, r_1: float = 1 / 3, r_2: float = 2 / 3) -> Tensor:
    """SEEDS-3 (Gonzalez et al. 2023): three stages at λ_s, λ_s + r₁h, λ_s + r₂h; stage 3 and the
    final step use D's linear trend through (λ_s, latest stage) with φ₂ weights (the
    exponential-RK structure of DPM-Solver-3). All stage noises lie on one Brownian path.
    D on the last step."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        sigma_s1 = _sigma(torch.lerp(lambda_s, lambda_t, r_1))
        sigma_s2 = _sigma(torch.lerp(lambda_s, lambda_t, r_2))

        x_2 = sigma_s1 / sigmas[i] * (-r_1 * h * eta).exp() * x - _ei_phi_1(-r_1 * h_eta) * denoised
        if noisy:
            path = _extend_path_noise(None, r_1 * h * eta, noise_sampler, sigmas[i], sigma_s1)
            x_2 = x_2 + path * sigma_s1 * s_noise
        denoised_2 = _denoise(model, x_2, sigma_s1, extra_args)

        a3_2 = r_2 / r_1 * _ei_phi_2(-r_2 * h_eta)
        a3_1 = _ei_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s2 / sigmas[i] * (-r_2 * h * eta).exp() * x - (a3_1 * denoised + a3_2 * denoised_2)
        if noisy:
            path = _extend_path_noise(path, (r_2 - r_1) * h * eta, noise_sampler, sigma_s1, sigma_s2)
            x_3 = x_3 + path * sigma_s2 * s_noise
        denoised_3 = _denoise(model, x_3, sigma_s2, extra_args)

        b3 = _ei_phi_2(-h_eta) / r_2
        b1 = _ei_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - (b1 * denoised + b3 * denoised_3)
        if noisy:
            path = _extend_path_noise(path, (1 - r_2) * h * eta, noise_sampler, sigma_s2, sigmas[i + 1])
            x = x + path * sigmas[i + 1] * s_noise
    return x


@torch.no_grad()
def sample_exp_heun_2_x0(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                         callback: Callback | None = None, solver_type: str = "phi_2") -> Tensor:
    """Exponential Heun in data prediction and λ: a DPM-Solver++(1) step to σ', a model call
    there, and the step redone with D's linear trend (SEEDS-2 with r = 1, η = 0)."""
    return sample_seeds_2(model, x, sigmas, extra_args, callback, eta=0.0, s_noise=0.0, r=1.0,
                          solver_type=solver_type)


@torch.no_grad()
def sample_exp_heun_2_x0_sde(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                             callback: Callback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                             noise_sampler: NoiseSampler | None = None, solver_type: str = "phi_2") -> Tensor:
    """Stochastic exponential Heun (SEEDS-2 with r = 1: the stage and the step share their
    noise)."""
    return sample_seeds_2(model, x, sigmas, extra_args, callback, eta=eta, s_noise=s_noise,
                          noise_sampler=noise_sampler, r=1.0, solver_type=solver_type)


# ---------------------------------------------------------------------------------------------
# RES multistep and gradient estimation
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_res_multistep(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                         callback: Callback | None = None, s_noise: float = 1.0,
                         noise_sampler: NoiseSampler | None = None, eta: float = 0.0, cfg_pp: bool = False) -> Tensor:
    """RES second-order multistep (Zhang et al. 2023, "Improved order analysis and design of
    exponential integrator for diffusion models"): x ← e^{−h}·x + h·(b₁·D + b₂·D_prev) with
    b₁ = φ₁ − φ₂/c₂, b₂ = φ₂/c₂, φ_k evaluated at −h and c₂ the previous node's relative
    position −(λ(σ_down,prev) − λ(σ_prev))/h. η > 0 makes it ancestral (steps to σ_down, then
    σ_up noise). First and last steps are Euler. `cfg_pp` re-noises along the unconditional
    prediction and keeps unconditional predictions as history, like dpmpp_2m_cfg_pp."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    old_denoised = old_sigma_down = None
    for i in range(len(sigmas) - 1):
        if cfg_pp:
            denoised, uncond = _denoise_with_uncond(model, x, sigmas[i], extra_args)
        else:
            denoised = uncond = _denoise(model, x, sigmas[i], extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, sigmas[i], denoised)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _lambda(sigmas[i]), _lambda(sigma_down)
            t_prev, t_old = _lambda(sigmas[i - 1]), _lambda(old_sigma_down)
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            base = x + (denoised - uncond) if cfg_pp else x
            x = torch.exp(-h) * base + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0 and eta > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = uncond if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


@torch.no_grad()
def sample_gradient_estimation(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                               callback: Callback | None = None, ge_gamma: float = 2.0, cfg_pp: bool = False) -> Tensor:
    """Gradient estimation (Permenter & Yuan 2024): after the first Euler step, step along
    d̄ = γ·d + (1 − γ)·d_prev, a momentum-like correction of the denoiser's error. `cfg_pp` uses
    the unconditional slope and steps from D."""
    extra_args = {} if extra_args is None else extra_args
    old_d = None
    for i in range(len(sigmas) - 1):
        if cfg_pp:
            denoised, uncond = _denoise_with_uncond(model, x, sigmas[i], extra_args)
            d = to_d(x, sigmas[i], uncond)
        else:
            denoised = _denoise(model, x, sigmas[i], extra_args)
            d = to_d(x, sigmas[i], denoised)
        _report(callback, i, x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if cfg_pp:
            x = denoised + d * sigmas[i + 1]
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        elif old_d is None:
            x = x + d * dt
        else:
            x = x + (ge_gamma * d + (1 - ge_gamma) * old_d) * dt
        old_d = d
    return x


# ---------------------------------------------------------------------------------------------
# Other stochastic samplers
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_ddpm(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                callback: Callback | None = None, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Ancestral DDPM (Ho et al. 2020) between arbitrary grid points, in VP variables:
    μ = (x_vp − (1−α)/√(1−ᾱ)·ε)/√α with α = ᾱ/ᾱ', plus the posterior std
    √((1−α)(1−ᾱ')/(1−ᾱ)) of noise, then back to σ space. The step to 0 gives D."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, extra_args)
        _report(callback, i, x, sigma, denoised)
        eps = (x - denoised) / sigma
        x_vp = x / torch.sqrt(1.0 + sigma ** 2.0)
        alpha_cumprod = 1 / (sigma * sigma + 1)
        alpha_cumprod_next = 1 / (sigma_next * sigma_next + 1)
        alpha = alpha_cumprod / alpha_cumprod_next
        mu = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_next > 0:
            std = ((1 - alpha) * (1.0 - alpha_cumprod_next) / (1.0 - alpha_cumprod)).sqrt()
            mu = mu + std * noise_sampler(sigma, sigma_next)
            x = mu * torch.sqrt(1.0 + sigma_next ** 2.0)
        else:
            x = mu
    return x


@torch.no_grad()
def sample_lcm(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
               callback: Callback | None = None, noise_sampler: NoiseSampler | None = None) -> Tensor:
    """Latent-consistency sampling (Luo et al. 2023): jump to D, then re-noise to σ' with fresh
    noise."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


def er_sde_noise_scaler(x: Tensor) -> Tensor:
    """ER-SDE's default noise scale function f(λ) = λ·(e^{λ^0.3} + 10) (Cui et al. 2023)."""
    return x * ((x ** 0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                  callback: Callback | None = None, s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None,
                  noise_scaler: Callable[[Tensor], Tensor] | None = None, max_stage: int = 3) -> Tensor:
    """Extended reverse-time SDE solver (ER-SDE-Solver-3, Cui et al. 2023) in λ_er = σ:
    x ← r·x + (1 − r)·D + stage-2/3 Taylor terms of D in σ, r = f(σ')/f(σ), with the integrals
    ∫dλ/f and ∫(λ − σ)/f dλ taken by a 200-point rectangle rule, plus noise
    √(σ'² − σ²r²). f(λ) = λ gives the ODE (no noise), f(λ) = λ² the reverse-time SDE."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    noise_scaler = er_sde_noise_scaler if noise_scaler is None else noise_scaler
    n_points = 200
    point_index = torch.arange(0, n_points, dtype=torch.float32, device=x.device)
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            stage = min(max_stage, i + 1)
            lam_s, lam_t = sigmas[i], sigmas[i + 1]
            r = noise_scaler(lam_t) / noise_scaler(lam_s)
            x = r * x + (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / n_points
                positions = lam_t + point_index * step
                scaled = noise_scaler(positions)
                integral = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (lam_s - sigmas[i - 1])
                x = x + (dt + integral * noise_scaler(lam_t)) * denoised_d
                if stage >= 3:
                    integral_u = torch.sum((positions - lam_s) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((lam_s - sigmas[i - 2]) / 2)
                    x = x + ((dt ** 2) / 2 + integral_u * noise_scaler(lam_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                std = (lam_t ** 2 - lam_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * std
        old_denoised = denoised
    return x


def sa_solver_tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0) -> Callable[[Tensor], float]:
    """SA-Solver's τ(σ): stochastic (τ = η) only for σ in [end_sigma, start_sigma]."""
    def tau(sigma: Tensor) -> float:
        if eta <= 0:
            return 0.0
        return eta if start_sigma >= float(sigma) >= end_sigma else 0.0
    return tau


def _sa_solver_coefficients(nodes: Sequence[float], lambda_s: float, lambda_t: float, tau: float,
                            simple_order_2: bool, corrector: bool) -> list[float]:
    """Stochastic Adams weights b_j (Xue et al. 2023, eqs. 15/18) for D at λ `nodes` (oldest
    first): b_j = (1+τ²)·∫_{λs}^{λt} e^{(1+τ²)(λ−λt)}·ℓ_j(λ) dλ, exact for polynomials. The
    moments of u = λ − λt follow by integration by parts; a Vandermonde solve gives b_j."""
    k = 1 + tau ** 2
    h = lambda_t - lambda_s
    if simple_order_2 and len(nodes) == 2:  # the paper's simplified order-2 weights (App. D)
        if corrector:
            b_new = 0.5 * k * h
            return [-math.expm1(-k * h) - b_new, b_new]
        b_old = 0.5 * k * h ** 2 / (nodes[0] - lambda_s)
        return [b_old, -math.expm1(-k * h) - b_old]
    n = len(nodes)
    u_s = lambda_s - lambda_t
    moments = [-math.expm1(-k * h)]  # (1+τ²)∫ e^{k·u} u^p du over [u_s, 0]
    for p in range(1, n):
        moments.append(-(u_s ** p) * math.exp(-k * h) - p / k * moments[-1])
    u = torch.tensor([node - lambda_t for node in nodes], dtype=torch.float64)
    vandermonde_t = torch.stack([u ** p for p in range(n)])
    return torch.linalg.solve(vandermonde_t, torch.tensor(moments, dtype=torch.float64)).tolist()


@torch.no_grad()
def sample_sa_solver(model: Denoiser, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                     callback: Callback | None = None, tau_func: Callable[[Tensor], float] | None = None,
                     s_noise: float = 1.0, noise_sampler: NoiseSampler | None = None, predictor_order: int = 3,
                     corrector_order: int = 4, use_pece: bool = False, simple_order_2: bool = False) -> Tensor:
    """SA-Solver (Xue et al. 2023): stochastic Adams predictor-corrector in λ. The predictor
    extrapolates D from the last steps; after the model call at the predicted point, the
    corrector redoes the step including it (PEC; `use_pece` re-evaluates the model at the
    corrected point, one more call per step). τ(σ) sets the stochasticity (noise
    σ'·√(1 − e^{−2τ²h})); `sample` defaults it to η = 1 between 20 % and 80 % of the schedule,
    without a schedule it is η = 1 everywhere. Orders drop near the end of a grid ending in 0."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_sampler(noise_sampler, x, extra_args)
    tau_func = sa_solver_tau_interval(float("inf"), 0.0) if tau_func is None else tau_func
    lambdas = [float(v) for v in _lambda(sigmas.double())]
    max_order = max(predictor_order, corrector_order)
    lower_order_to_end = float(sigmas[-1]) == 0
    x_pred = x
    preds: list[Tensor] = []
    tau = 0.0
    h = torch.zeros(())
    noise = torch.zeros_like(x)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x_pred, sigmas[i], extra_args)
        _report(callback, i, x_pred, sigmas[i], denoised)
        preds = (preds + [denoised])[-max_order:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if lower_order_to_end:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)

        if c_order == 0:
            x = x_pred
        else:
            b = _sa_solver_coefficients(lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i], tau,
                                        simple_order_2, corrector=True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + sum(c * d for c, d in zip(b, preds[-c_order:]))
            if tau > 0 and s_noise > 0:
                x = x + noise  # the same noise the predictor used: both integrate the same path
            if use_pece:
                denoised = _denoise(model, x, sigmas[i], extra_args)
                preds[-1] = denoised

        if sigmas[i + 1] == 0:
            x = denoised
            continue
        tau = tau_func(sigmas[i + 1])
        b = _sa_solver_coefficients(lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1], tau,
                                    simple_order_2, corrector=False)
        h = _lambda(sigmas[i + 1]) - _lambda(sigmas[i])
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x + sum(c * d for c, d in zip(b, preds[-p_order:]))
        if tau > 0 and s_noise > 0:
            noise = _noise_term(sigmas[i + 1], tau ** 2 * h, noise_sampler(sigmas[i], sigmas[i + 1]), s_noise)
            x_pred = x_pred + noise
    return x


# ---------------------------------------------------------------------------------------------
# Registry and the KSampler entry point
# ---------------------------------------------------------------------------------------------

Sampler = Callable[..., Tensor]

SAMPLERS: dict[str, Sampler] = {
    "euler": sample_euler,
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral": sample_euler_ancestral,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "heun": sample_heun,
    "heunpp2": sample_heunpp2,
    "exp_heun_2_x0": sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": sample_exp_heun_2_x0_sde,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": partial(sample_dpmpp_sde, cpu_noise=False),
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": partial(sample_dpmpp_2m_sde, cpu_noise=False),
    "dpmpp_2m_sde_heun": partial(sample_dpmpp_2m_sde, solver_type="heun"),
    "dpmpp_2m_sde_heun_gpu": partial(sample_dpmpp_2m_sde, solver_type="heun", cpu_noise=False),
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": partial(sample_dpmpp_3m_sde, cpu_noise=False),
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "deis": sample_deis,
    "res_multistep": sample_res_multistep,
    "res_multistep_cfg_pp": partial(sample_res_multistep, cfg_pp=True),
    "res_multistep_ancestral": partial(sample_res_multistep, eta=1.0),
    "res_multistep_ancestral_cfg_pp": partial(sample_res_multistep, eta=1.0, cfg_pp=True),
    "gradient_estimation": sample_gradient_estimation,
    "gradient_estimation_cfg_pp": partial(sample_gradient_estimation, cfg_pp=True),
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
    "sa_solver": sample_sa_solver,
    "sa_solver_pece": partial(sample_sa_solver, use_pece=True),
    "ddim": sample_euler,  # ComfyUI's "ddim" is Euler; only its inpaint noise differs (see `sample`)
    "uni_pc": partial(sample_uni_pc, variant="bh1"),
    "uni_pc_bh2": partial(sample_uni_pc, variant="bh2"),
}

SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


class LatentFormat(Protocol):
    """A model family's latent scaling (e.g. SD1.5: ×0.18215 into the model space)."""

    def process_in(self, latent: Tensor) -> Tensor: ...

    def process_out(self, latent: Tensor) -> Tensor: ...


class _InpaintDenoiser:
    """Keeps the unmasked region on the known latent: before each call it is replaced by the
    latent noised to the current σ, after it the prediction there is the latent itself.
    `mask` is 1 where the image is regenerated."""

    def __init__(self, model: Denoiser, ms: DiscreteSchedule, latent: Tensor, noise: Tensor, mask: Tensor) -> None:
        self.model, self.ms, self.latent, self.noise, self.mask = model, ms, latent, noise, mask

    def _blend_input(self, x: Tensor, sigma: Tensor) -> Tensor:
        return x * self.mask + self.ms.noise_scaling(sigma, self.noise, self.latent) * (1.0 - self.mask)

    def _blend_output(self, denoised: Tensor) -> Tensor:
        return denoised * self.mask + self.latent * (1.0 - self.mask)

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor:
        return self._blend_output(self.model(self._blend_input(x, sigma), sigma, **extra_args))

    def with_uncond(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> tuple[Tensor, Tensor]:
        guided, uncond = _call_with_uncond(self.model, self._blend_input(x, sigma), sigma, extra_args)
        return self._blend_output(guided), uncond


def schedule_defaults(sampler_name: str, ms: DiscreteSchedule) -> dict[str, Any]:
    """Options whose defaults depend on the model's schedule (ComfyUI reads them from the model):
    SA-Solver is stochastic only between 20 % and 80 % of the sampling process."""
    if sampler_name in ("sa_solver", "sa_solver_pece"):
        return {"tau_func": sa_solver_tau_interval(ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8))}
    return {}


def sample(model: Denoiser, ms: DiscreteSchedule, noise: Tensor, latent: Tensor, sigmas: Tensor,
           sampler_name: str, *, seed: int, callback: Callable[[int, Tensor, Tensor, int], None] | None = None,
           denoise_mask: Tensor | None = None, latent_format: LatentFormat | None = None,
           sampler_options: dict[str, Any] | None = None, extra_args: dict[str, Any] | None = None) -> Tensor:
    """Run a named sampler the way ComfyUI's KSampler does and return the new latent.

    `noise` is `prepare_noise(latent, seed)` (zeros to disable noise), `sigmas` the grid from
    `ksampler_sigmas` / a SIGMAS input; an empty grid returns `latent` untouched. A non-zero
    latent is moved into model space with `latent_format.process_in` (empty latents stay zero)
    and the result comes back through `process_out`. The start is x = latent + σ₀·noise, or
    √(1+σ₀²)·noise when σ₀ is the model's σ_max. `callback(step, denoised, x, total_steps)` runs
    once per step; raising from it interrupts sampling.
    """
    if len(sigmas) == 0:
        return latent
    try:
        sampler = SAMPLERS[sampler_name]
    except KeyError:
        raise ValueError(f"unknown sampler {sampler_name!r}") from None
    if latent_format is not None and torch.count_nonzero(latent) > 0:
        latent = latent_format.process_in(latent)
    x = ms.noise_scaling(sigmas[0], noise, latent, ms.is_max_denoise(sigmas))
    if denoise_mask is not None:
        # ComfyUI's "ddim" draws separate noise for the kept region ("random" inpaint option).
        inpaint_noise = (torch.randn(noise.shape, dtype=noise.dtype, generator=cpu_generator(seed + 1)).to(noise.device)
                         if sampler_name == "ddim" else noise)
        model = _InpaintDenoiser(model, ms, latent, inpaint_noise, denoise_mask)
    total_steps = len(sigmas) - 1
    k_callback = None if callback is None else (
        lambda info: callback(info["i"], info["denoised"], info["x"], total_steps))
    options = {**schedule_defaults(sampler_name, ms), **(sampler_options or {})}
    out = sampler(model, x, sigmas, extra_args={**(extra_args or {}), "seed": seed}, callback=k_callback, **options)
    out = ms.inverse_noise_scaling(sigmas[-1], out)
    return latent_format.process_out(out) if latent_format is not None else out
