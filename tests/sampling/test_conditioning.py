"""Area, mask, strength and timestep-range conditioning really applied in sampling, and cond batching.

The analytic UNet's denoised output is affine in the conditioning c and cell-local, so the weighted
average of two prompts' predictions equals the prediction of the averaged prompt: an area / mask
conditioned run must equal, cell by cell, plain runs with the expected mixed prompt."""
from __future__ import annotations

import pytest
import torch

from diffusion.conditioning import MODEL_COND_BATCHER, cond_entries, latent_mask, mask_bounds, resolve_area
from diffusion.guidance import CFGDenoiser
from diffusion.schedules import DiscreteSchedule
from nodes.conditioning import (CLIPTextEncode, ConditioningCombine, ConditioningConcat, ConditioningSetArea,
                                ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask,
                                ConditioningSetTimestepRange)
from nodes.sampling import KSampler

A = torch.tensor([[[1.0, -2.0, 0.5, 3.0]]])
B = torch.tensor([[[-4.0, 1.0, 2.0, -1.0]]])
NEGATIVE = [[torch.tensor([[[0.3, 0.2, -0.1, 0.0]]]), {}]]
HEIGHT, WIDTH = 8, 16  # latent cells (64 × 128 pixels)
LEFT = (..., slice(None, WIDTH // 2))
RIGHT = (..., slice(WIDTH // 2, None))


def _cond(c: torch.Tensor) -> list:
    return [[c, {}]]


def _run(model, positive, rt, *, sampler="euler", scheduler="karras", steps=6, cfg=4.0):
    latent = {"samples": torch.zeros(1, 4, HEIGHT, WIDTH)}
    return KSampler().execute(model, 42, steps, cfg, sampler, scheduler, positive, NEGATIVE, latent, rt)[0]["samples"]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def _left_mask(value: float = 1.0) -> torch.Tensor:
    mask = torch.zeros(1, HEIGHT * 8, WIDTH * 8)
    mask[..., : WIDTH * 4] = value
    return mask


@pytest.fixture
def reference_runs(analytic_model, runtime):
    """Plain runs with prompt A and with the mixed prompt (A + B)/2."""
    rt, _ = runtime()
    return _run(analytic_model(), _cond(A), rt), _run(analytic_model(), _cond((A + B) / 2), rt)


def test_resolve_area():
    assert resolve_area(None, 8, 16) is None
    assert resolve_area((8, 16, 0, 0), 8, 16) is None  # the whole latent
    assert resolve_area((8, 8, 0, 0), 8, 16) == (8, 8, 0, 0)
    assert resolve_area(("percentage", 0.5, 1.0, 0.5, 0.0), 8, 16) == (4, 16, 4, 0)
    assert resolve_area(("percentage", 0.01, 0.01, 0.0, 0.0), 8, 16) == (1, 1, 0, 0)  # at least one cell
    assert resolve_area((80, 80, 4, 12), 8, 16) == (4, 4, 4, 12)  # cut at the latent's edge


def test_mask_bounds_and_latent_mask():
    mask = torch.zeros(2, 1, 8, 16)
    mask[0, 0, 2:4, 5] = 1
    mask[1, 0, 6, 9] = 0.5
    assert mask_bounds(mask) == (5, 5, 2, 5)
    assert mask_bounds(torch.zeros(1, 8, 8)) is None
    x = torch.zeros(3, 4, 8, 16)
    resized = latent_mask(_left_mask(), x)
    assert resized.shape == (3, 1, 8, 16)
    assert torch.equal(resized[..., :8], torch.ones(3, 1, 8, 8)) and not resized[..., 8:].any()


def test_area_conditioning_applies_only_inside_its_area(analytic_model, runtime, reference_runs):
    plain, mixed = reference_runs
    rt, _ = runtime()
    area = ConditioningSetArea().execute(_cond(B), width=64, height=64, x=0, y=0, strength=1.0)[0]
    positive = ConditioningCombine().execute(_cond(A), area)[0]
    model = analytic_model()
    out = _run(model, positive, rt)
    _close(out[LEFT], mixed[LEFT])
    _close(out[RIGHT], plain[RIGHT])
    assert (out[LEFT] - plain[LEFT]).abs().max() > 1.0
    # per model evaluation: negative and A batched at full size, B alone on its 8 × 8 crop
    shapes = [tuple(x.shape) for x, _, _ in model.base.unet.calls]
    assert shapes == [(2, 4, 8, 16), (1, 4, 8, 8)] * 6


def test_area_percentage_matches_the_pixel_area(analytic_model, runtime, reference_runs):
    plain, mixed = reference_runs
    rt, _ = runtime()
    area = ConditioningSetAreaPercentage().execute(_cond(B), width=0.5, height=1.0, x=0.0, y=0.0, strength=1.0)[0]
    out = _run(analytic_model(), ConditioningCombine().execute(_cond(A), area)[0], rt)
    _close(out[LEFT], mixed[LEFT])
    _close(out[RIGHT], plain[RIGHT])


def test_strength_weights_overlapping_prompts(analytic_model, runtime):
    rt, _ = runtime()
    strong = ConditioningSetAreaStrength().execute(_cond(B), 3.0)[0]
    out = _run(analytic_model(), ConditioningCombine().execute(_cond(A), strong)[0], rt)
    _close(out, _run(analytic_model(), _cond((A + 3 * B) / 4), rt))


@pytest.mark.parametrize("set_cond_area", ["default", "mask bounds"])
def test_mask_conditioning(set_cond_area, analytic_model, runtime, reference_runs):
    plain, mixed = reference_runs
    rt, _ = runtime()
    masked = ConditioningSetMask().execute(_cond(B), _left_mask(), 1.0, set_cond_area)[0]
    model = analytic_model()
    out = _run(model, ConditioningCombine().execute(_cond(A), masked)[0], rt)
    _close(out[LEFT], mixed[LEFT])
    _close(out[RIGHT], plain[RIGHT])
    widths = {x.shape[-1] for x, _, _ in model.base.unet.calls}
    assert widths == ({16, 8} if set_cond_area == "mask bounds" else {16})  # mask bounds crop the model input


def test_soft_mask_and_mask_strength_weight_the_prompt(analytic_model, runtime):
    rt, _ = runtime()
    masked = ConditioningSetMask().execute(_cond(B), torch.full((1, 16, 16), 0.5), 0.5, "default")[0]
    out = _run(analytic_model(), ConditioningCombine().execute(_cond(A), masked)[0], rt)
    _close(out, _run(analytic_model(), _cond((A + 0.25 * B) / 1.25), rt))


def test_timestep_range_gates_by_sigma(analytic_model, runtime):
    rt, _ = runtime()
    early = ConditioningSetTimestepRange().execute(_cond(A), 0.0, 0.5)[0]
    late = ConditioningSetTimestepRange().execute(_cond(B), 0.5, 1.0)[0]
    model = analytic_model()
    _run(model, ConditioningCombine().execute(early, late)[0], rt, scheduler="normal", steps=10)
    ms = DiscreteSchedule()
    boundary = ms.percent_to_sigma(0.5)
    assert boundary == pytest.approx(1.61558, abs=1e-5)  # spec §7.1
    used = []
    for x, t, context in model.base.unet.calls:
        sigma = float(ms.sigma(t[0]))
        assert x.shape[0] == 2 and torch.equal(context[0], NEGATIVE[0][0][0])  # one active entry + the negative
        used.append((sigma, "A" if torch.equal(context[1], A[0]) else "B"))
    assert [name for _, name in used] == ["A" if sigma >= boundary else "B" for sigma, _ in used]
    assert {name for _, name in used} == {"A", "B"}


def test_a_prompt_with_no_active_entry_predicts_zero(analytic_model, runtime):
    """ComfyUI's Σ(D·w)/(Σw + 1e-37): a branch with nothing active contributes 0, not NaN."""
    rt, _ = runtime()
    never = ConditioningSetTimestepRange().execute(_cond(A), 1.0, 1.0)[0]
    out = _run(analytic_model(), never, rt, cfg=1.0)
    assert torch.isfinite(out).all() and out.abs().max() < 1e-6  # euler with D ≡ 0 shrinks x to 0


@pytest.fixture
def sd15(tiny_models, runtime):
    rt, _ = runtime()
    return (*tiny_models.load("sd15", rt), rt)


def test_concat_lengths_are_batched_by_repeating_tokens(sd15):
    model, clip, _, rt = sd15
    short = CLIPTextEncode().execute("a photo of a cat", clip, rt)[0]
    long = ConditioningConcat().execute(short, CLIPTextEncode().execute("in the snow", clip, rt)[0])[0]
    denoiser = model.to_device()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.tensor([2.5])
    positive, negative = (cond_entries(denoiser, c, x) for c in (long, short))
    assert [e.cond.context.shape[1] for e in positive + negative] == [154, 77]
    assert MODEL_COND_BATCHER.joinable([positive[0].cond, negative[0].cond])
    assert MODEL_COND_BATCHER.join([positive[0].cond, negative[0].cond]).context.shape[:2] == (2, 154)
    batched = CFGDenoiser(denoiser.apply, positive, negative, 6.0, batcher=MODEL_COND_BATCHER)(x, sigma)
    separate = CFGDenoiser(denoiser.apply, positive, negative, 6.0)(x, sigma)
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-4)
    five = [[torch.cat([short[0][0]] * 5, dim=1), {}]]
    assert not MODEL_COND_BATCHER.joinable([cond_entries(denoiser, five, x)[0].cond, negative[0].cond])


def test_area_conditioning_on_a_real_unet(sd15):
    """A UNet with attention and convolutions runs on the area crop; outside it, only the base prompt acts."""
    model, clip, _, rt = sd15
    base = CLIPTextEncode().execute("a landscape", clip, rt)[0]
    subject = CLIPTextEncode().execute("a red fox", clip, rt)[0]
    area = ConditioningSetArea().execute(subject, width=64, height=64, x=64, y=0, strength=1.0)[0]
    latent = {"samples": torch.zeros(1, 4, HEIGHT, WIDTH)}
    run = KSampler().execute
    plain = run(model, 5, 3, 7.0, "euler", "normal", base, base, latent, rt)[0]["samples"]
    out = run(model, 5, 3, 7.0, "euler", "normal", ConditioningCombine().execute(base, area)[0], base, latent,
              rt)[0]["samples"]
    assert torch.isfinite(out).all()
    assert (out[RIGHT] - plain[RIGHT]).abs().mean() > 10 * (out[LEFT] - plain[LEFT]).abs().mean()

