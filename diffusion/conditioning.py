"""From CONDITIONING values to the sampler's per-step cond entries.

A CONDITIONING is a list of [tensor [1, T, D], options] pairs (nodes/conditioning.py). Each pair becomes
one `guidance.CondEntry` for a sampling run:

* ``area`` ((h, w, y, x) latent cells, or ("percentage", h, w, y, x) fractions of the latent) restricts
  the entry to that rectangle: the model sees x cut to it and the prediction is added back there;
* ``mask`` ([B|1, H, W], any size; bilinearly resized to the latent) weights the entry per cell, times
  ``mask_strength``; with ``set_area_to_bounds`` the entry is also cut to the mask's bounding box;
* ``strength`` weights the entry against the others it overlaps (Σ D·w / Σ w, spec §7.5);
* ``start_percent`` / ``end_percent`` become σ_start / σ_end (spec §7.1 percent_to_sigma): the entry is
  evaluated only while σ_end ≤ σ ≤ σ_start;
* the rest (pooled output, SDXL sizes, inpainting channels) is the model's business: `Denoiser.make_cond`.

ConditioningCombine's several entries are therefore a weighted average of their predictions, and
ConditioningConcat's longer token sequences just a longer context. `MODEL_COND_BATCHER` lets guidance run
entries of both prompts in one network call, repeating shorter contexts up to the least common multiple of
the lengths (at most 4×; repeated tokens do not change attention, spec §5.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .guidance import Area, CondEntry
from .model import Denoiser, ModelCond

MAX_CONTEXT_REPEAT = 4


def resolve_area(area: Sequence[Any] | None, height: int, width: int) -> Area | None:
    """An ``area`` option as (h, w, y, x) cells inside a height × width latent; None when it covers it all.

    Percentages are rounded to whole cells (at least one); rectangles reaching past the latent are cut."""
    if area is None:
        return None
    if area[0] == "percentage":
        _, h, w, y, x = area
        h, w, y, x = max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width)
    else:
        h, w, y, x = (int(v) for v in area)
    y, x = min(max(y, 0), height - 1), min(max(x, 0), width - 1)
    h, w = max(1, min(h, height - y)), max(1, min(w, width - x))
    return None if (h, w, y, x) == (height, width, 0, 0) else (h, w, y, x)


def latent_mask(mask: Tensor, x: Tensor) -> Tensor:
    """A [B|1, (1,) H, W] mask as [B, 1, h, w] on x's grid (bilinear), cycled to x's batch."""
    mask = mask.to(device=x.device, dtype=x.dtype)
    mask = mask.reshape(-1, 1, *mask.shape[-2:])
    if mask.shape[-2:] != x.shape[-2:]:
        mask = F.interpolate(mask, size=tuple(x.shape[-2:]), mode="bilinear")
    if mask.shape[0] != x.shape[0]:
        mask = mask.repeat(-(-x.shape[0] // mask.shape[0]), 1, 1, 1)[:x.shape[0]]
    return mask


def mask_bounds(mask: Tensor) -> Area | None:
    """The bounding box (h, w, y, x) of a mask's non-zero cells over the whole batch; None if all zero."""
    covered = mask.abs().reshape(-1, *mask.shape[-2:]).amax(dim=0) > 0
    rows, cols = covered.any(dim=1).nonzero(), covered.any(dim=0).nonzero()
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return (y1 - y0 + 1, x1 - x0 + 1, y0, x0)


def _crop(tensor: Tensor | None, area: Area | None) -> Tensor | None:
    if tensor is None or area is None:
        return tensor
    h, w, y, x = area
    return tensor[..., y:y + h, x:x + w]


def cond_entry(denoiser: Denoiser, context: Tensor, options: Mapping[str, Any], x: Tensor, *,
               latent_image: Tensor | None = None, denoise_mask: Tensor | None = None) -> CondEntry | None:
    """One CONDITIONING pair as a CondEntry for sampling latents shaped like x (model space);
    None when its mask is empty (it could never contribute)."""
    height, width = x.shape[-2:]
    area = resolve_area(options.get("area"), height, width)
    strength = float(options.get("strength", 1.0))
    mask = options.get("mask")
    if mask is not None:
        mask = latent_mask(mask, x)
        strength *= float(options.get("mask_strength", 1.0))
        if options.get("set_area_to_bounds"):
            bounds = mask_bounds(mask)
            if bounds is None:
                return None
            area = resolve_area(bounds, height, width)
    cond = denoiser.make_cond(context, options, x, latent_image=latent_image, denoise_mask=denoise_mask)
    schedule = denoiser.schedule
    return CondEntry(
        cond=replace(cond, concat=_crop(cond.concat, area)),
        mask=_crop(mask, area),
        strength=strength,
        area=area,
        sigma_start=schedule.percent_to_sigma(float(options.get("start_percent", 0.0))),
        sigma_end=schedule.percent_to_sigma(float(options.get("end_percent", 1.0))),
    )


def cond_entries(denoiser: Denoiser, conditioning: Sequence[Sequence[Any]], x: Tensor, *,
                 latent_image: Tensor | None = None, denoise_mask: Tensor | None = None) -> list[CondEntry]:
    """Every pair of a CONDITIONING list as entries (see `cond_entry`)."""
    entries = (cond_entry(denoiser, context, options, x, latent_image=latent_image, denoise_mask=denoise_mask)
               for context, options in conditioning)
    return [entry for entry in entries if entry is not None]


class ModelCondBatcher:
    """Joins `ModelCond`s along the batch axis (guidance.CondBatcher)."""

    @staticmethod
    def _length(conds: Sequence[ModelCond]) -> int:
        return math.lcm(*(c.context.shape[1] for c in conds))

    def joinable(self, conds: Sequence[ModelCond]) -> bool:
        first = conds[0]

        def same(a: Tensor | None, b: Tensor | None) -> bool:
            return (a is None) == (b is None) and (a is None or a.shape[1:] == b.shape[1:])

        if any(c.control is not None for c in conds):
            return False  # control residuals are per call and not batched
        if not all(c.context.shape[2:] == first.context.shape[2:] and same(c.y, first.y)
                   and same(c.concat, first.concat) for c in conds[1:]):
            return False
        length = self._length(conds)
        return all(length // c.context.shape[1] <= MAX_CONTEXT_REPEAT for c in conds)

    def join(self, conds: Sequence[ModelCond]) -> ModelCond:
        length = self._length(conds)
        context = torch.cat([c.context.repeat(1, length // c.context.shape[1], 1) for c in conds])
        y = None if conds[0].y is None else torch.cat([c.y for c in conds])
        concat = None if conds[0].concat is None else torch.cat([c.concat for c in conds])
        return ModelCond(context=context, y=y, concat=concat)


MODEL_COND_BATCHER = ModelCondBatcher()
