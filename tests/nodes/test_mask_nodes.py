"""Mask nodes: loading a channel, solid/invert, grow/erode, threshold, feather, conversions."""
from __future__ import annotations

import pytest
import torch

from model_management.folders import PathRefused
from nodes.mask import (FeatherMask, GrowMask, ImageToMask, InvertMask, LoadImageMask, MaskToImage, SolidMask,
                        ThresholdMask)

RGBA = [[[255, 0, 0, 255], [0, 255, 0, 128]], [[0, 0, 255, 0], [51, 102, 153, 51]]]


@pytest.mark.parametrize(("channel", "expected"), [
    ("alpha", [[0.0, 1 - 128 / 255], [1.0, 0.8]]),
    ("red", [[1.0, 0.0], [0.0, 0.2]]),
    ("green", [[0.0, 1.0], [0.0, 0.4]]),
    ("blue", [[0.0, 0.0], [1.0, 0.6]]),
])
def test_load_image_mask_channels(rt, write_image, channel, expected):
    write_image(rt.folders.input / "m.png", RGBA)
    (mask,) = LoadImageMask().execute("m.png", channel, rt=rt)
    assert mask.shape == (1, 2, 2)
    torch.testing.assert_close(mask[0], torch.tensor(expected))


def test_load_image_mask_without_alpha_is_opaque(rt, write_image):
    write_image(rt.folders.input / "rgb.png", [[[10, 20, 30]]])
    assert LoadImageMask().execute("rgb.png", "alpha", rt=rt)[0].tolist() == [[[0.0]]]


def test_load_image_mask_refuses_escape_and_validates(rt, write_image):
    write_image(rt.folders.base / "secret.png", RGBA)
    with pytest.raises(PathRefused, match=r"image: refused path '\.\./secret\.png'"):
        LoadImageMask().execute("../secret.png", "red", rt=rt)
    assert LoadImageMask.VALIDATE_INPUTS("../secret.png", rt=rt) == "Invalid image file: ../secret.png"


def test_load_image_mask_lists_all_input_files(services, write_image):
    write_image(services.folders.input / "a.png", [[0]])
    (services.folders.input / "notes.txt").write_text("x")
    options = LoadImageMask.input_types(services)["required"]["image"]
    assert options == (["a.png", "notes.txt"], {"image_upload": True})


def test_solid_and_invert():
    (mask,) = SolidMask().execute(value=0.25, width=3, height=2)
    assert mask.shape == (1, 2, 3) and mask.eq(0.25).all()
    (inverted,) = InvertMask().execute(torch.tensor([[0.0, 0.25]]))  # [H,W] accepted
    assert inverted.tolist() == [[[1.0, 0.75]]]


def dot(size: int = 5) -> torch.Tensor:
    mask = torch.zeros((1, size, size))
    mask[0, size // 2, size // 2] = 1
    return mask


def test_grow_tapered_is_a_diamond_and_square_otherwise():
    (cross,) = GrowMask().execute(dot(), expand=1, tapered_corners=True)
    assert cross[0].tolist() == [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [0] * 5]
    (diamond,) = GrowMask().execute(dot(), expand=2, tapered_corners=True)
    assert diamond.sum() == 13 and diamond[0, 0, 2] == 1 and diamond[0, 0, 1] == 0
    (square,) = GrowMask().execute(dot(), expand=1, tapered_corners=False)
    assert square[0, 1:4, 1:4].eq(1).all() and square.sum() == 9


def test_grow_negative_erodes_and_ignores_outside_pixels():
    block = torch.zeros((1, 5, 5))
    block[0, 1:4, 1:4] = 1
    for tapered in (True, False):
        (eroded,) = GrowMask().execute(block, expand=-1, tapered_corners=tapered)
        assert eroded.sum() == 1 and eroded[0, 2, 2] == 1
    (full,) = GrowMask().execute(torch.ones((5, 5)), expand=-2, tapered_corners=True)
    assert full.shape == (1, 5, 5) and full.eq(1).all()


def test_grow_keeps_grey_levels():
    mask = torch.tensor([[[0.0, 0.3, 0.0, 0.7]]])
    grown = GrowMask().execute(mask, expand=1, tapered_corners=True)[0]
    torch.testing.assert_close(grown, torch.tensor([[[0.3, 0.3, 0.7, 0.7]]]))
    torch.testing.assert_close(GrowMask().execute(mask, expand=0, tapered_corners=True)[0], mask)


def test_threshold():
    (out,) = ThresholdMask().execute(torch.tensor([[[0.2, 0.5, 0.7]]]), value=0.5)
    assert out.tolist() == [[[0.0, 0.0, 1.0]]] and out.dtype == torch.float32


def test_feather_left_and_top_ramps():
    (out,) = FeatherMask().execute(torch.ones((1, 4, 6)), left=2, top=4, right=0, bottom=0)
    assert out[0, 3].tolist() == [0.5, 1, 1, 1, 1, 1]
    assert out[0, :, 5].tolist() == [0.25, 0.5, 0.75, 1.0]


def test_feather_right_keeps_comfyui_off_by_one():
    (out,) = FeatherMask().execute(torch.ones((1, 1, 6)), left=0, top=0, right=2, bottom=0)
    assert out[0, 0].tolist() == [0.5, 1, 1, 1, 1, 1]


def test_mask_image_round_trip():
    mask = torch.tensor([[0.0, 0.5]])
    (image,) = MaskToImage().execute(mask)
    assert image.shape == (1, 1, 2, 3) and image[0, 0, 1].tolist() == [0.5, 0.5, 0.5]
    rgba = torch.tensor([[[[0.1, 0.2, 0.3, 0.4]]]])
    assert [ImageToMask().execute(rgba, c)[0].item() for c in ("red", "green", "blue", "alpha")] == \
        pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert ImageToMask().execute(rgba, "green")[0].shape == (1, 1, 1)
