"""Latent and VAE nodes: numeric checks on small latents, and a tiny VAE for encode / decode / tiled /
inpainting (spec §9.4, §7.9)."""
from __future__ import annotations

import pytest
import torch

from nodes.latent import (EmptyLatentImage, LatentBlend, LatentComposite, LatentFromBatch, LatentUpscale,
                          LatentUpscaleBy, RepeatLatentBatch, SetLatentNoiseMask, VAEDecode, VAEDecodeTiled,
                          VAEEncode, VAEEncodeForInpaint, VAEEncodeTiled, bislerp, grow_mask)

GEN = torch.Generator().manual_seed(0)


def _latent(batch: int = 1, height: int = 8, width: int = 8) -> dict:
    return {"samples": torch.randn(batch, 4, height, width, generator=GEN)}


def test_empty_latent_image():
    (latent,) = EmptyLatentImage().execute(512, 264, 3)
    assert set(latent) == {"samples"}
    assert latent["samples"].shape == (3, 4, 33, 64) and not latent["samples"].any()


def test_latent_upscale_sizes_and_aspect():
    src = _latent(1, 8, 16)
    node = LatentUpscale()
    assert node.execute(src, "nearest-exact", 0, 0, "disabled")[0] is src
    assert node.execute(src, "bilinear", 256, 128, "disabled")[0]["samples"].shape == (1, 4, 16, 32)
    assert node.execute(src, "bilinear", 0, 256, "disabled")[0]["samples"].shape == (1, 4, 32, 64)  # width follows
    assert node.execute(src, "bilinear", 256, 0, "disabled")[0]["samples"].shape == (1, 4, 16, 32)
    assert node.execute(src, "area", 16, 16, "disabled")[0]["samples"].shape == (1, 4, 8, 8)  # at least 64 px
    # nearest-exact ×2 repeats every cell; center crop to a square keeps the middle 8 columns.
    doubled = node.execute(src, "nearest-exact", 256, 128, "disabled")[0]["samples"]
    assert torch.equal(doubled[..., ::2, ::2], src["samples"])
    cropped = node.execute(src, "nearest-exact", 64, 64, "center")[0]["samples"]
    assert torch.equal(cropped, src["samples"][..., 4:12])
    by = LatentUpscaleBy().execute({**src, "batch_index": [3]}, "bicubic", 1.5)[0]
    assert by["samples"].shape == (1, 4, 12, 24) and by["batch_index"] == [3]


def test_bislerp_keeps_vector_length_between_opposite_cells():
    a = torch.tensor([1.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.0, 1.0, 0.0, 0.0])
    samples = torch.stack([a, b], dim=-1).view(1, 4, 1, 2)
    out = bislerp(samples, 4, 1)
    assert out.shape == (1, 4, 1, 4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1, 1, 4))  # bilinear would shrink to 0.79
    assert torch.equal(out[..., 0], samples[..., 0]) and torch.equal(out[..., 3], samples[..., 1])
    same = torch.randn(2, 4, 5, 6, generator=GEN)
    torch.testing.assert_close(bislerp(same, 6, 5), same)
    up = LatentUpscale().execute({"samples": same}, "bislerp", 96, 80, "disabled")[0]["samples"]
    assert up.shape == (2, 4, 10, 12)


def test_latent_composite_paste_and_feather():
    to = {"samples": torch.zeros(1, 4, 8, 8)}
    src = {"samples": torch.ones(1, 4, 4, 4)}
    out = LatentComposite().execute(to, src, 16, 24, 0)[0]["samples"]
    want = torch.zeros(1, 4, 8, 8)
    want[..., 3:7, 2:6] = 1
    assert torch.equal(out, want)
    assert not to["samples"].any()  # the input is untouched
    clipped = LatentComposite().execute(to, src, 48, 48, 0)[0]["samples"]
    assert clipped[..., 6:, 6:].eq(1).all() and clipped.sum() == 4 * 4
    feathered = LatentComposite().execute(to, src, 16, 16, 16)[0]["samples"][0, 0]
    # 2-cell ramps (1/2, 1) on inner edges; the source meets no canvas edge here.
    assert torch.allclose(feathered[2, 2:6], torch.tensor([0.25, 0.5, 0.5, 0.25]))
    assert torch.allclose(feathered[3, 2:6], torch.tensor([0.5, 1.0, 1.0, 0.5]))
    at_edge = LatentComposite().execute(to, src, 0, 0, 16)[0]["samples"][0, 0]
    assert torch.allclose(at_edge[0, :4], torch.tensor([1.0, 1.0, 1.0, 0.5]))  # no ramp on the canvas edge


def test_latent_blend():
    a = {"samples": torch.full((1, 4, 8, 8), 2.0), "batch_index": [1]}
    b = {"samples": torch.full((1, 4, 8, 8), -1.0)}
    out = LatentBlend().execute(a, b, 0.25)[0]
    assert torch.allclose(out["samples"], torch.full((1, 4, 8, 8), 0.25 * 2 - 0.75))
    assert out["batch_index"] == [1]
    resized = LatentBlend().execute(a, {"samples": torch.full((1, 4, 4, 8), -1.0)}, 0.5)[0]
    assert torch.allclose(resized["samples"], torch.full((1, 4, 8, 8), 0.5))


def test_latent_from_batch_and_repeat():
    src = _latent(4)
    src["noise_mask"] = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8)
    out = LatentFromBatch().execute(src, 1, 2)[0]
    assert torch.equal(out["samples"], src["samples"][1:3])
    assert out["batch_index"] == [1, 2]
    assert torch.equal(out["noise_mask"][:, 0, 0, 0], torch.tensor([1.0, 2.0]))
    tail = LatentFromBatch().execute(src, 10, 5)[0]
    assert tail["batch_index"] == [3] and tail["samples"].shape[0] == 1
    again = LatentFromBatch().execute(out, 1, 1)[0]
    assert again["batch_index"] == [2]  # indices follow the items, not their position

    repeated = RepeatLatentBatch().execute(out, 3)[0]
    assert repeated["samples"].shape[0] == 6
    assert torch.equal(repeated["samples"][4:], out["samples"])
    assert repeated["batch_index"] == [1, 2, 3, 4, 5, 6]
    assert torch.equal(repeated["noise_mask"][:, 0, 0, 0], torch.tensor([1.0, 2.0] * 3))
    single_mask = {**_latent(2), "noise_mask": torch.ones(1, 1, 8, 8)}
    assert RepeatLatentBatch().execute(single_mask, 2)[0]["noise_mask"].shape == (1, 1, 8, 8)
    assert "batch_index" not in RepeatLatentBatch().execute(_latent(2), 2)[0]


def test_set_latent_noise_mask():
    src = _latent(2)
    out = SetLatentNoiseMask().execute(src, torch.ones(16, 16))[0]
    assert out["noise_mask"].shape == (1, 1, 16, 16) and out["samples"] is src["samples"]
    assert "noise_mask" not in src


# ---- VAE ------------------------------------------------------------------------------------


@pytest.fixture
def vae(load_checkpoint):
    return load_checkpoint("sd15")[2]


def _image(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(batch, height, width, 3, generator=GEN)


def test_encode_decode_round_trip_shapes_and_range(vae):
    pixels = _image(2, 70, 52)  # cropped (centred) to 64×48
    (latent,) = VAEEncode().execute(pixels, vae)
    assert latent["samples"].shape == (2, 4, 8, 6) and latent["samples"].dtype == torch.float32
    assert torch.equal(latent["samples"], vae.vae.encode(pixels[:, 3:67, 2:50].movedim(-1, 1)).detach())
    (image,) = VAEDecode().execute(latent, vae)
    assert image.shape == (2, 64, 48, 3)
    assert image.min() >= 0 and image.max() <= 1
    rgba = torch.cat([pixels, torch.ones(2, 70, 52, 1)], dim=-1)
    assert torch.equal(VAEEncode().execute(rgba, vae)[0]["samples"], latent["samples"])  # alpha ignored


def test_tiled_matches_untiled(vae):
    """One tile covering everything is exact; with real tiling the seams blend, and the error shrinks as
    tiles grow (a random VAE is far less local than a trained one, so "close" is relative here)."""
    pixels = _image(1, 128, 128)
    (whole,) = VAEEncode().execute(pixels, vae)
    (image,) = VAEDecode().execute(whole, vae)
    (single,) = VAEDecodeTiled().execute(whole, vae, 512, 64, 64, 8)
    torch.testing.assert_close(single, image, atol=1e-5, rtol=0)
    assert torch.equal(VAEEncodeTiled().execute(pixels, vae, 512, 64, 64, 8)[0]["samples"], whole["samples"])

    def errors(tile: int) -> tuple[float, float]:
        (latent,) = VAEEncodeTiled().execute(pixels, vae, tile, 32, 64, 8)
        (decoded,) = VAEDecodeTiled().execute(whole, vae, tile, 32, 64, 8)
        assert latent["samples"].shape == whole["samples"].shape and decoded.shape == image.shape
        return ((latent["samples"] - whole["samples"]).abs().mean().item(), (decoded - image).abs().mean().item())

    small, large = errors(64), errors(96)
    assert large[0] < small[0] and large[1] < small[1]
    assert large[0] < 0.2 * whole["samples"].abs().mean()
    assert large[1] < 0.3 * (image - image.mean()).abs().mean()


def test_vae_encode_for_inpaint_greys_masked_pixels(vae):
    pixels = _image(1, 68, 64)  # 4 rows cropped: 2 at the top, 2 at the bottom
    mask = torch.zeros(1, 68, 64)
    mask[:, 20:30, 10:40] = 1.0
    mask[:, 40, 50] = 0.4  # rounds to 0: stays unmasked
    seen = []
    original_encode = vae.encode
    vae.encode = lambda p: seen.append(p) or original_encode(p)
    (latent,) = VAEEncodeForInpaint().execute(pixels, vae, mask, 6)
    vae.encode = original_encode
    encoded = seen[0]
    assert encoded.shape == (1, 64, 64, 3)
    inside = encoded[:, 18:28, 10:40]
    assert torch.equal(inside, torch.full_like(inside, 0.5))
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[18:28, 10:40] = False
    assert torch.equal(encoded[0][outside], pixels[0, 2:66][outside])
    assert torch.equal(latent["samples"], original_encode(encoded))
    noise_mask = latent["noise_mask"]
    assert noise_mask.shape == (1, 1, 64, 64)
    # a 6-wide box (padding 3) grows 2 cells up / left and 3 down / right: rows 16-30, cols 8-42
    rows = noise_mask[0, 0].any(dim=1).nonzero().flatten()
    cols = noise_mask[0, 0].any(dim=0).nonzero().flatten()
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (16, 30, 8, 42)
    assert set(noise_mask.unique().tolist()) == {0.0, 1.0}
    (plain,) = VAEEncodeForInpaint().execute(pixels, vae, mask, 0)
    assert torch.equal(plain["noise_mask"][0, 0], mask[0, 2:66].round())


def test_grow_mask_is_a_box_dilation():
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 4, 4] = 1
    grown = grow_mask(mask, 3)
    want = torch.zeros(9, 9)
    want[3:6, 3:6] = 1
    assert torch.equal(grown[0, 0], want)
