"""img2img strength and inpainting on tiny random checkpoints: which latents change, and where.

Strength (denoise) semantics are pinned exactly by the reference img2img cases (test_node_parity); here
the real UNet/VAE path shows their effect, and the two inpainting routes are checked: a noise mask
(SetLatentNoiseMask, any model) keeps the unmasked latent, and a 9-channel inpainting model gets
[x, mask, masked-image latent] as input (spec sd_formats §7.5, §7.9)."""
from __future__ import annotations

import pytest
import torch

from diffusion.latent_formats import SD_GREY_LATENT
from nodes.latent import EmptyLatentImage, SetLatentNoiseMask, VAEDecode, VAEEncode, VAEEncodeForInpaint
from nodes.conditioning import CLIPTextEncode
from nodes.sampling import KSampler

SIZE = 64


def _image() -> torch.Tensor:
    """A smooth colourful 64 × 64 test image [1, H, W, 3] in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    return torch.stack([x, y, (x + y) / 2 * (1 + torch.sin(6 * x)) / 2], dim=-1)[None]


@pytest.fixture
def sd(tiny_models, runtime):
    def load(family: str = "sd15"):
        rt, _ = runtime()
        model, clip, vae = tiny_models.load(family, rt)
        positive = CLIPTextEncode().execute("a blue sky over a field", clip, rt)[0]
        negative = CLIPTextEncode().execute("blurry", clip, rt)[0]
        return model, vae, positive, negative, rt
    return load


def _sample(model, positive, negative, latent, rt, denoise=1.0, sampler="euler", steps=4):
    return KSampler().execute(model, 11, steps, 6.0, sampler, "normal", positive, negative, latent, rt,
                              denoise)[0]


def test_img2img_changes_grow_with_denoise(sd):
    model, vae, positive, negative, rt = sd()
    latent = VAEEncode().execute(_image(), vae)[0]
    assert torch.equal(_sample(model, positive, negative, latent, rt, denoise=0.0)["samples"], latent["samples"])
    changes = []
    for denoise in (0.1, 0.4, 0.7, 1.0):
        out = _sample(model, positive, negative, latent, rt, denoise=denoise)
        changes.append(float((out["samples"] - latent["samples"]).abs().mean()))
    assert changes == sorted(changes) and changes[0] > 0, changes
    assert changes[-1] > 5 * changes[0]
    pixels = VAEDecode().execute(_sample(model, positive, negative, latent, rt, denoise=0.4), vae)[0]
    assert pixels.shape == (1, SIZE, SIZE, 3) and torch.isfinite(pixels).all()


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral", "ddim"])
def test_noise_mask_keeps_the_unmasked_latent(sampler, sd):
    model, vae, positive, negative, rt = sd()
    latent = VAEEncode().execute(_image(), vae)[0]
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1.0  # regenerate the left half
    masked = SetLatentNoiseMask().execute(latent, mask)[0]
    out = _sample(model, positive, negative, masked, rt, sampler=sampler)
    assert torch.equal(out["noise_mask"], masked["noise_mask"])
    before, after = latent["samples"], out["samples"]
    torch.testing.assert_close(after[..., 4:], before[..., 4:], rtol=0, atol=1e-5)  # latent columns 4..7 kept
    assert (after[..., :4] - before[..., :4]).abs().mean() > 0.1
    # (decoded pixels are not compared: the VAE decoder's GroupNorm and attention mix the whole image, so
    # even an unchanged latent half decodes slightly differently — in ComfyUI as well)


def test_inpainting_model_gets_mask_and_masked_image_channels(sd):
    model, vae, positive, negative, rt = sd("sd15-inpaint")
    assert model.base.inpaint
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 24:40, 24:40] = 1.0
    latent = VAEEncodeForInpaint().execute(_image(), vae, mask, grow_mask_by=8)[0]
    seen = []
    hook = model.base.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        out = _sample(model, positive, negative, latent, rt)
    finally:
        hook.remove()
    noise_mask = latent["noise_mask"]  # grown by 8 px: pixels 20..43
    blend = torch.nn.functional.interpolate(noise_mask, size=(8, 8), mode="bilinear")  # the sampler's mask
    latent_mask = blend.round()  # the model's mask channel
    expected_image = latent["samples"] * model.latent_format.scale_factor  # the greyed image, model space
    for x_in in seen:
        assert x_in.shape == (2, 9, 8, 8)  # [uncond, cond] × [noisy latent (4), mask (1), masked image (4)]
        assert torch.equal(x_in[:, 4:5], latent_mask.expand(2, -1, -1, -1))
        torch.testing.assert_close(x_in[:, 5:], expected_image.expand(2, -1, -1, -1))
    keep = (blend == 0).expand_as(out["samples"])
    assert 0 < int(keep[0, 0].sum()) < 64
    torch.testing.assert_close(out["samples"][keep], latent["samples"][keep], rtol=0, atol=1e-5)
    assert (out["samples"][~keep] - latent["samples"][~keep]).abs().mean() > 0.1


def test_inpainting_model_without_mask_sees_grey(sd):
    model, vae, positive, negative, rt = sd("sd15-inpaint")
    seen = []
    hook = model.base.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        out = _sample(model, positive, negative, EmptyLatentImage().execute(32, 32, 1)[0], rt, steps=2)
    finally:
        hook.remove()
    grey = torch.tensor(SD_GREY_LATENT).view(1, 4, 1, 1).expand(2, 4, 4, 4)
    assert all(torch.equal(x[:, 4:5], torch.ones(2, 1, 4, 4)) and torch.equal(x[:, 5:], grey) for x in seen)
    assert out["samples"].shape == (1, 4, 4, 4)
