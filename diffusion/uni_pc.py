"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"), multistep, data prediction, as ComfyUI's `uni_pc` / `uni_pc_bh2` run it.

ComfyUI runs UniPC in VP variables: x_vp = x/√(1+σ²), "time" t = σ with α_t = 1/√(1+σ²),
std_t = √(1 − α_t²) and λ = ln α_t − ln std_t (= −ln σ). We do the same, in float32: computing
std_t from 1 − α_t² loses precision near σ = 0 (about 1e-5 of the result at the final
σ = 0.001), and reproducing ComfyUI's images means reproducing that too.

Settings: order min(3, len(σ)−2), lower order on the last steps, the corrector on every step
but the last (its model call at the predicted point is reused by the next step, so it costs no
extra evaluation), and a final σ of 0 replaced by 0.001; the result is divided by α(0.001).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

_FINAL_SIGMA = 0.001  # λ = −ln σ needs a positive end point


def _unipc_coefficients(rks: list[float], h: float, variant: str, order: int,
                        predictor: bool) -> list[float]:
    """ρ of UniP (predictor, uses the order−1 history differences) or UniC (corrector, also the
    new model value) from R·ρ = b, with R_ik = r_k^(i−1) and b_i = i!·h·φ_{i+1}(−h)/B(h)."""
    if predictor and order == 2 or not predictor and order == 1:
        return [0.5]  # the paper's simplified choice for the lowest orders
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi = math.expm1(hh) / hh - 1  # φ-series, updated recursively below
    factorial = 1
    b = []
    for i in range(1, order + 1):
        b.append(h_phi * factorial / b_h)
        factorial *= i + 1
        h_phi = h_phi / hh - 1 / factorial
    n = order - 1 if predictor else order
    r = torch.tensor(rks[:n], dtype=torch.float64)
    mat = torch.stack([r ** k for k in range(n)])
    return torch.linalg.solve(mat, torch.tensor(b[:n], dtype=torch.float64)).tolist()


def sample_uni_pc(model, x: Tensor, sigmas: Tensor, extra_args: dict[str, Any] | None = None,
                  callback=None, variant: str = "bh1") -> Tensor:
    """UniPC multistep sampler. `variant` "bh1" uses B(h) = h, "bh2" uses B(h) = e^h − 1."""
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    extra_args = {} if extra_args is None else extra_args
    sigmas = sigmas.clone()
    if sigmas[-1] == 0:
        sigmas[-1] = _FINAL_SIGMA
    log_alpha = 0.5 * torch.log(1 / (sigmas ** 2 + 1))
    alpha = torch.exp(log_alpha)
    std = torch.sqrt(1 - torch.exp(2 * log_alpha))
    lambdas = (log_alpha - 0.5 * torch.log(1 - torch.exp(2 * log_alpha))).tolist()
    steps = len(sigmas) - 1
    order = max(1, min(3, len(sigmas) - 2))
    s_in = x.new_ones([x.shape[0]])

    def data_prediction(x_vp: Tensor, k: int) -> Tensor:
        # ComfyUI goes through ε: the denoiser sees σ-space x, UniPC gets (x_vp − std·ε)/α.
        x_in = x_vp * (sigmas[k] ** 2 + 1.0) ** 0.5
        eps = (x_in - model(x_in, sigmas[k] * s_in, **extra_args)) / sigmas[k]
        return (x_vp - std[k] * eps) / alpha[k]

    x = x / torch.sqrt(1.0 + sigmas[0] ** 2.0)
    history = [data_prediction(x, 0)]  # data predictions, oldest first
    hist_lambdas = [lambdas[0]]
    for k in range(1, steps + 1):
        if callback is not None:
            callback({"x": x / alpha[k - 1], "i": k - 1, "sigma": sigmas[k - 1], "sigma_hat": sigmas[k - 1],
                      "denoised": history[-1]})
        step_order = min(order, k, steps + 1 - k)
        use_corrector = k < steps
        lam0, m0 = hist_lambdas[-1], history[-1]
        h = lambdas[k] - lam0
        rks = [(hist_lambdas[-(j + 1)] - lam0) / h for j in range(1, step_order)] + [1.0]
        d1s = [(history[-(j + 1)] - m0) / rks[j - 1] for j in range(1, step_order)]
        b_h = -h if variant == "bh1" else math.expm1(-h)

        # Shared first-order part: the DPM-Solver++ / DDIM step to σ_k.
        x_base = (std[k] / std[k - 1]) * x - alpha[k] * math.expm1(-h) * m0
        x_pred = x_base
        if d1s:
            rho_p = _unipc_coefficients(rks, h, variant, step_order, predictor=True)
            x_pred = x_base - alpha[k] * b_h * sum(r * d for r, d in zip(rho_p, d1s))
        if not use_corrector:  # last step: no model call at the end point
            x = x_pred
            continue
        m_new = data_prediction(x_pred, k)
        rho_c = _unipc_coefficients(rks, h, variant, step_order, predictor=False)
        correction = rho_c[-1] * (m_new - m0)
        for r, d in zip(rho_c[:-1], d1s):
            correction = correction + r * d
        x = x_base - alpha[k] * b_h * correction
        history = (history + [m_new])[-order:]
        hist_lambdas = (hist_lambdas + [lambdas[k]])[-order:]
    return x / alpha[-1]
