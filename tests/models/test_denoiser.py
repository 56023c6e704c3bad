"""diffusion.model.Denoiser on tiny checkpoints: σ-space wrapper (spec §7.1), SDXL vector y (§7.7),
inpainting channels (§7.9); MODEL handle clones; latent formats and fitted latent2rgb previews."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffusion.latent_formats import SD15, SD_GREY_LATENT, fit_rgb_projection
from diffusion.schedules import DiscreteSchedule

GEN = torch.Generator().manual_seed(0)


def _nearest_timestep(schedule: DiscreteSchedule, sigma: torch.Tensor) -> torch.Tensor:
    return (schedule.log_sigmas[None, :] - sigma.log()[:, None]).abs().argmin(dim=1).float()


def _emb(value: float) -> torch.Tensor:
    """Spec §7.7: [cos(v·f_k), sin(v·f_k)], f_k = exp(−ln(10⁴)·k/128), k < 128."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(128, dtype=torch.float32) / 128)
    return torch.cat([torch.cos(value * freqs), torch.sin(value * freqs)])


def _inputs(batch: int, context_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 4, 8, 8, generator=GEN) * 3
    sigma = torch.tensor([14.6146, 0.9876][:batch])
    context = torch.randn(1, 77, context_dim, generator=GEN)
    return x, sigma, context


@pytest.mark.parametrize("family", ["sd15", "sd21-v"])
def test_apply_is_the_k_diffusion_wrapper(family, load_checkpoint):
    model, _, _ = load_checkpoint(family)
    denoiser = model.to_device()
    x, sigma, context = _inputs(2, denoiser.unet.config.context_dim)
    cond = denoiser.make_cond(context, {}, x)
    assert cond.context.shape == (2, 77, context.shape[-1]) and cond.y is None and cond.concat is None
    with torch.no_grad():
        got = denoiser.apply(x, sigma, cond)
        s = sigma.view(-1, 1, 1, 1)
        out = denoiser.unet(x / (s ** 2 + 1).sqrt(), _nearest_timestep(denoiser.schedule, sigma),
                            context.expand(2, -1, -1))
    if family == "sd15":
        want = x - s * out
    else:
        want = x / (s ** 2 + 1) - out * s / (s ** 2 + 1).sqrt()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(_nearest_timestep(denoiser.schedule, torch.tensor([14.6146, 0.0292])), torch.tensor([999., 0.]))


def test_sdxl_vector_conditioning(load_checkpoint):
    model, _, _ = load_checkpoint("sdxl")
    denoiser = model.denoiser
    x, sigma, context = _inputs(2, 96)
    pooled = torch.randn(1, 64, generator=GEN)
    options = {"pooled_output": pooled, "width": 1024, "height": 768, "crop_w": 8, "crop_h": 16,
               "target_width": 2048, "target_height": 1536}
    y = denoiser.make_cond(context, options, x).y
    want = torch.cat([pooled[0], *(_emb(v) for v in (768, 1024, 16, 8, 1536, 2048))])
    assert y.shape == (2, 64 + 6 * 256)
    torch.testing.assert_close(y[0], want, atol=1e-6, rtol=0)
    assert torch.equal(y[0], y[1])
    # Defaults: the latent's pixel size, zero crop, target = size, zero pooled output.
    default = denoiser.make_cond(context, {}, x).y[0]
    torch.testing.assert_close(default, torch.cat([torch.zeros(64), *(_emb(v) for v in (64, 64, 0, 0, 64, 64))]))
    with torch.no_grad():
        a = denoiser.apply(x, sigma, denoiser.make_cond(context, options, x))
        b = denoiser.apply(x, sigma, denoiser.make_cond(context, {**options, "width": 512}, x))
    assert a.shape == x.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pooled text output is 32 wide"):
        denoiser.make_cond(context, {"pooled_output": torch.zeros(1, 32)}, x)


def test_refiner_aesthetic_score_defaults(load_checkpoint):
    model, _, _ = load_checkpoint("sdxl-refiner")
    denoiser = model.denoiser
    x, _, context = _inputs(1, 64)
    pooled = torch.randn(1, 64, generator=GEN)
    positive = denoiser.make_cond(context, {"pooled_output": pooled, "width": 1024, "height": 1024}, x).y[0]
    negative = denoiser.make_cond(context, {"pooled_output": pooled, "width": 1024, "height": 1024,
                                            "prompt_type": "negative"}, x).y[0]
    explicit = denoiser.make_cond(context, {"pooled_output": pooled, "aesthetic_score": 4.0}, x).y[0]
    tail = lambda score: torch.cat([_emb(1024), _emb(1024), _emb(0), _emb(0), _emb(score)])  # noqa: E731
    torch.testing.assert_close(positive, torch.cat([pooled[0], tail(6.0)]), atol=1e-6, rtol=0)
    torch.testing.assert_close(negative, torch.cat([pooled[0], tail(2.5)]), atol=1e-6, rtol=0)
    assert positive.shape == (64 + 5 * 256,)
    torch.testing.assert_close(explicit[-256:], _emb(4.0), atol=1e-6, rtol=0)


def test_inpainting_channels(load_checkpoint):
    model, _, _ = load_checkpoint("sd15-inpaint")
    denoiser = model.denoiser
    assert denoiser.inpaint
    x, sigma, context = _inputs(2, 32)
    latent = torch.randn(1, 4, 8, 8, generator=GEN)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :24] = 1.0  # left 3 latent columns (24 px) to repaint
    concat = denoiser.make_cond(context, {}, x, latent_image=latent, denoise_mask=mask).concat
    assert concat.shape == (2, 5, 8, 8)
    want_mask = torch.zeros(8, 8)
    want_mask[:, :3] = 1
    assert torch.equal(concat[0, 0], want_mask) and torch.equal(concat[1, 0], want_mask)
    assert torch.equal(concat[1, 1:], latent[0])
    # No mask: everything is repainted over the grey latent (spec §7.9).
    blank = denoiser.make_cond(context, {}, x).concat
    assert torch.equal(blank[:, 0], torch.ones(2, 8, 8))
    assert torch.equal(blank[0, 1:, 0, 0], torch.tensor(SD_GREY_LATENT))
    # InpaintModelConditioning-style keys: a raw latent, scaled into model space here.
    raw = torch.randn(1, 4, 8, 8, generator=GEN)
    keyed = denoiser.make_cond(context, {"concat_latent_image": raw, "concat_mask": mask}, x).concat
    torch.testing.assert_close(keyed[0, 1:], raw[0] * 0.18215)
    with torch.no_grad():
        out = denoiser.apply(x, sigma, denoiser.make_cond(context, {}, x, latent_image=latent, denoise_mask=mask))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_model_handle_clones_share_weights(load_checkpoint):
    model, _, _ = load_checkpoint("sd15")
    model.patches["k"] = ["p1"]
    model.options["transformer_options"] = {"a": 1}
    clone = model.clone()
    assert clone.is_clone(model) and clone.base.unet is model.base.unet
    clone.set_schedule(DiscreteSchedule("v_prediction", zsnr=True))
    clone.patches["k"].append("p2")
    clone.options["transformer_options"]["a"] = 2
    assert model.denoiser.schedule.prediction == "eps" and clone.denoiser.schedule.prediction == "v_prediction"
    assert clone.denoiser.unet is model.denoiser.unet
    assert model.patches == {"k": ["p1"]} and model.options["transformer_options"] == {"a": 1}
    assert model.get_ram_usage() == sum(p.numel() * 4 for p in model.base.unet.state_dict().values())
    fresh, _, _ = load_checkpoint("sd15")  # no patches: moved as it is
    fresh.offload()
    assert next(fresh.to_device().unet.parameters()).device.type == "cpu"


def test_latent_format_round_trip_and_fitted_preview():
    z = torch.randn(2, 4, 3, 5, generator=GEN)
    torch.testing.assert_close(SD15.process_out(SD15.process_in(z)), z)
    assert SD15.preview_rgb(z) is None
    factors = torch.randn(4, 3, generator=GEN) * 0.2
    bias = torch.tensor([0.1, -0.2, 0.05])

    def linear_decoder(raw: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bchw,cr->brhw", raw, factors) + bias[None, :, None, None]
        return (F.interpolate(rgb, scale_factor=8, mode="nearest") + 1) / 2

    fitted = fit_rgb_projection(linear_decoder, SD15, 8)
    torch.testing.assert_close(torch.tensor(fitted.rgb_factors), factors, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(fitted.rgb_bias), bias, atol=1e-4, rtol=0)
    preview = fitted.preview_rgb(SD15.process_in(z))
    assert preview.shape == (2, 3, 5, 3)
    want = ((torch.einsum("bchw,cr->bhwr", z, factors) + bias + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(preview, want, atol=1e-4, rtol=0)
