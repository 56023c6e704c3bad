"""Classifier-free guidance on denoised predictions.

Samplers only see a denoiser D(x, σ) → x0. Guidance turns the model's per-conditioning
predictions into that one function: D = D_u + cfg·(D_c − D_u). Mixing x0 predictions is the
same as mixing ε or v, since at fixed (x, σ) the denoised value is affine in the network output.

Every conditioning entry of both prompts that is active at σ is evaluated on its area of x; entries
whose inputs can share one network call (same area size, joinable conditionings) are batched, in
the order [negative…, positive…] (spec §7.5), which at cfg > 1 halves the number of UNet calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

# (x, σ per batch item, conditioning) -> denoised prediction for that conditioning.
Predict = Callable[[Tensor, Tensor, Any], Tensor]
# (height, width, y, x) in latent cells.
Area = tuple[int, int, int, int]


@dataclass(frozen=True)
class CondEntry:
    """One conditioning of a positive or negative prompt.

    `cond` is passed untouched to `predict` (the model side knows what it holds). The entry applies
    only inside `area` (None = everywhere), and only while sigma_end ≤ σ ≤ sigma_start. `mask`
    (broadcastable to x cut to the area, 1 = applies) and `strength` weight this entry where several
    overlap."""
    cond: Any
    mask: Tensor | None = None
    strength: float = 1.0
    area: Area | None = None
    sigma_start: float = math.inf
    sigma_end: float = 0.0

    def active(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start

    def region(self, x: Tensor) -> Tensor:
        """The view of x (or of a tensor shaped like it) that this entry covers."""
        if self.area is None:
            return x
        height, width, y, x0 = self.area
        return x[..., y:y + height, x0:x0 + width]

    def weight(self) -> Tensor | float:
        return self.strength if self.mask is None else self.mask * self.strength


class CondBatcher(Protocol):
    """How conditionings of one model are batched into a single call (see diffusion.conditioning)."""

    def joinable(self, conds: Sequence[Any]) -> bool: ...

    def join(self, conds: Sequence[Any]) -> Any: ...


def _groups(jobs: list[tuple[int, CondEntry]], x: Tensor, batcher: CondBatcher | None) -> list[list[tuple[int, CondEntry]]]:
    """Jobs that can share a network call, in first-seen order."""
    if batcher is None:
        return [[job] for job in jobs]
    groups: list[list[tuple[int, CondEntry]]] = []
    for job in jobs:
        shape = job[1].region(x).shape
        for group in groups:
            if group[0][1].region(x).shape == shape and batcher.joinable([e.cond for _, e in group] + [job[1].cond]):
                group.append(job)
                break
        else:
            groups.append([job])
    return groups


def predict_branches(predict: Predict, x: Tensor, sigma: Tensor, branches: Sequence[Sequence[CondEntry]],
                     batcher: CondBatcher | None = None) -> list[Tensor]:
    """Each branch's combined prediction: Σ(D_k·w_k) / Σ w_k over its active entries, w_k = mask·strength,
    each D_k computed on (and added into) the entry's area.

    The 1e-37 floor keeps regions no entry covers at 0 instead of NaN; with a single unmasked
    entry of strength 1 the result is that entry's prediction exactly. With a `batcher`, entries of
    all branches are evaluated in as few calls as it allows."""
    level = float(torch.as_tensor(sigma).reshape(-1)[0])
    jobs = [(b, entry) for b, entries in enumerate(branches) for entry in entries if entry.active(level)]
    totals = [torch.zeros_like(x) for _ in branches]
    weights = [torch.full_like(x, 1e-37) for _ in branches]
    for group in _groups(jobs, x, batcher):
        inputs = [entry.region(x) for _, entry in group]
        if len(group) == 1:
            outputs = [predict(inputs[0], sigma, group[0][1].cond)]
        else:
            sigmas = sigma.repeat(len(group)) if sigma.ndim else sigma
            joined = predict(torch.cat(inputs), sigmas, batcher.join([entry.cond for _, entry in group]))
            outputs = list(joined.chunk(len(group)))
        for (b, entry), out in zip(group, outputs):
            w = entry.weight()
            entry.region(totals[b]).add_(out * w)
            entry.region(weights[b]).add_(w)
    return [total / weight for total, weight in zip(totals, weights)]


def predict_conds(predict: Predict, x: Tensor, sigma: Tensor, entries: Sequence[CondEntry],
                  batcher: CondBatcher | None = None) -> Tensor:
    """One prompt's combined prediction (see `predict_branches`)."""
    return predict_branches(predict, x, sigma, [entries], batcher)[0]


def cfg_combine(cond: Tensor, uncond: Tensor, cfg: float) -> Tensor:
    """D_u + cfg·(D_c − D_u), in ComfyUI's operation order (it matters in the last bit)."""
    return uncond + (cond - uncond) * cfg


class CFGDenoiser:
    """The denoiser samplers call: guided prediction from a positive and a negative prompt.

    At cfg == 1 the negative prompt cannot change the result, so it is not evaluated (half the
    network calls). cfg++ samplers call `with_uncond`, which always evaluates both branches,
    because they re-noise with the unconditional prediction."""

    def __init__(self, predict: Predict, positive: Sequence[CondEntry], negative: Sequence[CondEntry],
                 cfg: float, batcher: CondBatcher | None = None) -> None:
        self.predict = predict
        self.positive = positive
        self.negative = negative
        self.cfg = cfg
        self.batcher = batcher

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor:
        if math.isclose(self.cfg, 1.0):
            return predict_conds(self.predict, x, sigma, self.positive, self.batcher)
        return self.with_uncond(x, sigma)[0]

    def with_uncond(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> tuple[Tensor, Tensor]:
        """(guided, unconditional) denoised predictions."""
        uncond, cond = predict_branches(self.predict, x, sigma, [self.negative, self.positive], self.batcher)
        return cfg_combine(cond, uncond, self.cfg), uncond
