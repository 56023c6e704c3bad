"""Classifier-free guidance on denoised predictions.

Samplers only see a denoiser D(x, σ) → x0. Guidance turns the model's per-conditioning
predictions into that one function: D = D_u + cfg·(D_c − D_u). Mixing x0 predictions is the
same as mixing ε or v, since at fixed (x, σ) the denoised value is affine in the network output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# (x, σ per batch item, conditioning) -> denoised prediction for that conditioning.
Predict = Callable[[Tensor, Tensor, Any], Tensor]


@dataclass(frozen=True)
class CondEntry:
    """One conditioning of a positive or negative prompt.

    `cond` is passed untouched to `predict` (the model side knows what it holds). `mask`
    (broadcastable to x, 1 = applies) and `strength` weight this entry where several overlap;
    area crops and timestep ranges will be added here."""
    cond: Any
    mask: Tensor | None = None
    strength: float = 1.0


def predict_conds(predict: Predict, x: Tensor, sigma: Tensor, entries: Sequence[CondEntry]) -> Tensor:
    """Combine the predictions of several conditionings: Σ(D_k·w_k) / Σ w_k, w_k = mask·strength.

    The 1e-37 floor keeps regions no entry covers at 0 instead of NaN; with a single unmasked
    entry of strength 1 the result is that entry's prediction exactly."""
    total = torch.zeros_like(x)
    weight = torch.full_like(x, 1e-37)
    for entry in entries:
        w = entry.strength if entry.mask is None else entry.mask * entry.strength
        total += predict(x, sigma, entry.cond) * w
        weight += w
    return total / weight


def cfg_combine(cond: Tensor, uncond: Tensor, cfg: float) -> Tensor:
    """D_u + cfg·(D_c − D_u), in ComfyUI's operation order (it matters in the last bit)."""
    return uncond + (cond - uncond) * cfg


class CFGDenoiser:
    """The denoiser samplers call: guided prediction from a positive and a negative prompt.

    At cfg == 1 the negative prompt cannot change the result, so it is not evaluated (half the
    network calls). cfg++ samplers call `with_uncond`, which always evaluates both branches,
    because they re-noise with the unconditional prediction."""

    def __init__(self, predict: Predict, positive: Sequence[CondEntry], negative: Sequence[CondEntry],
                 cfg: float) -> None:
        self.predict = predict
        self.positive = positive
        self.negative = negative
        self.cfg = cfg

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor:
        if math.isclose(self.cfg, 1.0):
            return predict_conds(self.predict, x, sigma, self.positive)
        return self.with_uncond(x, sigma)[0]

    def with_uncond(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> tuple[Tensor, Tensor]:
        """(guided, unconditional) denoised predictions."""
        uncond = predict_conds(self.predict, x, sigma, self.negative)
        cond = predict_conds(self.predict, x, sigma, self.positive)
        return cfg_combine(cond, uncond, self.cfg), uncond
