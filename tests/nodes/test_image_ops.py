"""Pixel-level checks of the model-free image nodes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image import (EmptyImage, ImageBatch, ImageCompositeMasked, ImageCrop, ImageFromBatch, ImageInvert,
                         ImagePadForOutpaint, ImageScale, ImageScaleBy, JoinImageWithAlpha, RepeatImageBatch)


def ramp(batch: int = 1, height: int = 2, width: int = 2, channels: int = 3) -> torch.Tensor:
    n = batch * height * width * channels
    return torch.arange(n, dtype=torch.float32).reshape(batch, height, width, channels) / n


def test_empty_image_colour():
    (image,) = EmptyImage().execute(width=4, height=3, batch_size=2, color=0x123456)
    assert image.shape == (2, 3, 4, 3) and image.dtype == torch.float32
    assert torch.equal(image, torch.tensor([0x12 / 255, 0x34 / 255, 0x56 / 255]).expand(2, 3, 4, 3))
    image[0, 0, 0, 0] = 9  # a real tensor, not a view shared by every pixel
    assert image[1, 2, 3, 0] == pytest.approx(0x12 / 255)


def test_empty_image_defaults_black():
    (image,) = EmptyImage().execute(width=1, height=1)
    assert image.tolist() == [[[[0.0, 0.0, 0.0]]]]


def test_image_invert():
    image = torch.tensor([[[[0.0, 0.25, 1.0]]]])
    assert ImageInvert().execute(image)[0].tolist() == [[[[1.0, 0.75, 0.0]]]]


def test_scale_nearest_exact_replicates_pixels():
    image = torch.tensor([[[[0.0] * 3, [1.0] * 3], [[0.5] * 3, [0.25] * 3]]])
    (out,) = ImageScale().execute(image, "nearest-exact", width=4, height=4, crop="disabled")
    assert out.shape == (1, 4, 4, 3)
    assert out[0, :, :, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0.5, 0.5, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25]]


def test_scale_area_averages_blocks():
    image = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]], dtype=torch.float32)
    image = image[None, :, :, None].expand(1, 4, 4, 3)
    (out,) = ImageScale().execute(image, "area", width=2, height=2, crop="disabled")
    assert out[0, :, :, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_scale_bilinear_half_pixel_centres():
    image = torch.tensor([[[[0.0] * 3, [1.0] * 3]]])  # 1×2
    (out,) = ImageScale().execute(image, "bilinear", width=4, height=1, crop="disabled")
    assert out[0, 0, :, 0].tolist() == [0.0, 0.25, 0.75, 1.0]


def test_scale_zero_side_keeps_aspect_and_both_zero_is_identity():
    image = ramp(height=2, width=4)
    assert ImageScale().execute(image, "bilinear", width=0, height=4, crop="disabled")[0].shape == (1, 4, 8, 3)
    assert ImageScale().execute(image, "bilinear", width=2, height=0, crop="disabled")[0].shape == (1, 1, 2, 3)
    assert ImageScale().execute(image, "bilinear", width=0, height=0, crop="disabled")[0] is image


def test_scale_center_crop_trims_long_side():
    image = ramp(height=2, width=4)
    (out,) = ImageScale().execute(image, "nearest-exact", width=2, height=2, crop="center")
    assert torch.equal(out, image[:, :, 1:3])


def test_scale_lanczos_goes_through_8_bit_pil():
    image = ramp(height=3, width=5)
    (out,) = ImageScale().execute(image, "lanczos", width=7, height=4, crop="disabled")
    pil = Image.fromarray(np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8))
    expected = np.array(pil.resize((7, 4), Image.Resampling.LANCZOS)).astype(np.float32) / 255
    assert out.shape == (1, 4, 7, 3)
    assert torch.equal(out[0], torch.from_numpy(expected))


def test_scale_by():
    (out,) = ImageScaleBy().execute(ramp(height=2, width=4), "bicubic", scale_by=1.5)
    assert out.shape == (1, 3, 6, 3)


def test_pad_for_outpaint_image_and_feathered_mask():
    image = torch.zeros((1, 10, 10, 3))
    padded, mask = ImagePadForOutpaint().execute(image, left=2, top=0, right=0, bottom=1, feathering=3)
    assert padded.shape == (1, 11, 12, 3) and mask.shape == (1, 11, 12)
    assert torch.all(padded[:, :, :2] == 0.5) and torch.all(padded[:, 10] == 0.5)
    assert torch.all(padded[:, :10, 2:] == 0)
    assert torch.all(mask[0, :, :2] == 1) and torch.all(mask[0, 10] == 1)
    inner = mask[0, :10, 2:]
    # Row 4 is far from the bottom edge: only the left distance j counts, ((3 - j) / 3)².
    assert inner[4].tolist() == pytest.approx([1.0, 4 / 9, 1 / 9] + [0.0] * 7)
    # The bottom edge feathers too, with distance 10 - i (so its last row is 1 away, not 0, as in
    # ComfyUI); the top/right edges were not padded.
    assert inner[:, 5].tolist() == pytest.approx([0.0] * 8 + [1 / 9, 4 / 9])
    assert inner[0, 5] == 0


def test_pad_for_outpaint_without_room_to_feather_has_hard_mask():
    _, mask = ImagePadForOutpaint().execute(torch.zeros((1, 4, 4, 3)), left=8, top=0, right=0, bottom=0,
                                            feathering=2)
    assert mask[0, :, :8].eq(1).all() and mask[0, :, 8:].eq(0).all()


def test_image_crop_and_clamped_origin():
    image = ramp(height=4, width=4)
    (out,) = ImageCrop().execute(image, width=2, height=3, x=1, y=1)
    assert torch.equal(out, image[:, 1:4, 1:3])
    (edge,) = ImageCrop().execute(image, width=512, height=512, x=100, y=100)
    assert torch.equal(edge, image[:, 3:, 3:])


def test_image_batch_resizes_second_to_first():
    first, second = torch.zeros((1, 2, 2, 3)), torch.ones((2, 4, 6, 3))
    (out,) = ImageBatch().execute(first, second)
    assert out.shape == (3, 2, 2, 3)
    assert out[0].eq(0).all() and out[1:].eq(1).all()


def test_image_batch_adds_alpha_when_channels_differ():
    (out,) = ImageBatch().execute(torch.zeros((1, 2, 2, 3)), torch.full((1, 2, 2, 4), 0.5))
    assert out.shape == (2, 2, 2, 4)
    assert out[0, ..., 3].eq(1).all() and out[1].eq(0.5).all()


def test_repeat_and_from_batch():
    image = ramp(batch=3)
    (repeated,) = RepeatImageBatch().execute(image, amount=2)
    assert torch.equal(repeated, torch.cat((image, image)))
    assert torch.equal(ImageFromBatch().execute(image, batch_index=1, length=5)[0], image[1:])
    assert torch.equal(ImageFromBatch().execute(image, batch_index=9, length=1)[0], image[2:])


def test_composite_masked_pastes_and_clips():
    destination, source = torch.zeros((1, 4, 4, 3)), torch.ones((1, 2, 2, 3))
    (out,) = ImageCompositeMasked().execute(destination, source, x=1, y=1, resize_source=False)
    assert out[0, :, :, 0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert destination.eq(0).all()  # inputs are never modified
    (edge,) = ImageCompositeMasked().execute(destination, source, x=3, y=3, resize_source=False)
    assert edge[0, :, :, 0].sum() == 1 and edge[0, 3, 3, 0] == 1


def test_composite_masked_blends_with_resized_mask_and_batches():
    destination, source = torch.zeros((2, 4, 4, 3)), torch.ones((1, 2, 2, 3))
    mask = torch.tensor([[0.0, 1.0]])  # [H,W] 1×2, stretched to the 2×2 source
    (out,) = ImageCompositeMasked().execute(destination, source, x=0, y=0, resize_source=False, mask=mask)
    assert out.shape == (2, 4, 4, 3)
    assert out[1, :2, :2, 0].tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_composite_masked_resize_source_covers_destination():
    destination, source = torch.zeros((1, 4, 4, 3)), torch.full((1, 2, 2, 4), 0.25)
    (out,) = ImageCompositeMasked().execute(destination, source, x=0, y=0, resize_source=True)
    assert out.shape == (1, 4, 4, 3) and out.eq(0.25).all()


def test_join_image_with_alpha():
    image = ramp(batch=2, height=2, width=2)
    mask = torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])
    (out,) = JoinImageWithAlpha().execute(image, mask)
    assert out.shape == (1, 2, 2, 4)
    assert torch.equal(out[..., :3], image[:1])
    assert out[0, ..., 3].tolist() == [[1.0, 0.75], [0.5, 0.0]]
