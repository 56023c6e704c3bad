"""Mask nodes: load a mask from a file channel, make, invert, grow, threshold and feather masks, and
convert between MASK and IMAGE.

A MASK is float [B,H,W] in 0..1 where 1 marks the region to work on; inputs may also be [H,W].
Names, inputs, defaults and semantics follow ComfyUI (spec comfy_api.md §9.5, §9.9).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from nodes.imageutil import MAX_RESOLUTION, LoadsInputFile, as_mask_batch, frames, input_file, pil_to_tensor
from nodes.runtime import NodeRuntime
from nodes.schema import Boolean, Combo, Float, Int, Node, Out, Socket

CHANNELS = ("red", "green", "blue", "alpha")


class LoadImageMask(LoadsInputFile, Node):
    """One channel of an input file as a MASK; alpha is inverted (transparent = 1), like LoadImage."""

    CATEGORY = "mask"
    INPUTS = (
        Combo("image", lambda s: s.folders.list_files("input") if s else [], image_upload=True),
        Combo("channel", ("alpha", "red", "green", "blue")),
    )
    OUTPUTS = (Out("MASK"),)

    def execute(self, image: str, channel: str, rt: NodeRuntime) -> tuple[torch.Tensor]:
        with Image.open(input_file(rt.folders, image)) as img:
            first = next(frames(img)).convert("RGBA")
        mask = pil_to_tensor(first.getchannel(channel[0].upper()))
        return ((1.0 - mask if channel == "alpha" else mask).unsqueeze(0),)


class SolidMask(Node):
    CATEGORY = "mask"
    INPUTS = (
        Float("value", 1.0, min=0.0, max=1.0),
        Int("width", 512, min=1, max=MAX_RESOLUTION),
        Int("height", 512, min=1, max=MAX_RESOLUTION),
    )
    OUTPUTS = (Out("MASK"),)

    def execute(self, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    CATEGORY = "mask"
    INPUTS = (Socket("MASK", "mask"),)
    OUTPUTS = (Out("MASK"),)

    def execute(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - as_mask_batch(mask),)


class GrowMask(Node):
    """Dilate (expand > 0) or erode (expand < 0) by one pixel per step.

    tapered_corners uses the 4-neighbour cross, which rounds corners; otherwise the full 3×3 square.
    """

    CATEGORY = "mask"
    INPUTS = (
        Socket("MASK", "mask"),
        Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION),
        Boolean("tapered_corners", True),
    )
    OUTPUTS = (Out("MASK"),)

    def execute(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        out = as_mask_batch(mask).unsqueeze(1).float()
        sign = 1.0 if expand > 0 else -1.0  # erosion is dilation of the negated mask
        out = sign * out
        for _ in range(abs(expand)):
            out = _dilate(out, tapered_corners)
        return ((sign * out).squeeze(1),)


def _dilate(x: torch.Tensor, cross: bool) -> torch.Tensor:
    """One step of grey dilation of [B,1,H,W]; pixels outside the image are ignored."""
    if not cross:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    across = F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1))
    down = F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0))
    return torch.maximum(across, down)


class ThresholdMask(Node):
    CATEGORY = "mask"
    INPUTS = (Socket("MASK", "mask"), Float("value", 0.5, min=0.0, max=1.0))
    OUTPUTS = (Out("MASK"),)

    def execute(self, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return ((mask > value).float(),)


class FeatherMask(Node):
    """Fade the mask linearly towards zero over the given number of pixels at each edge."""

    CATEGORY = "mask"
    INPUTS = (
        Socket("MASK", "mask"),
        *(Int(side, 0, min=0, max=MAX_RESOLUTION) for side in ("left", "top", "right", "bottom")),
    )
    OUTPUTS = (Out("MASK"),)

    def execute(self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> tuple[torch.Tensor]:
        out = as_mask_batch(mask).clone()
        height, width = out.shape[-2:]
        left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
        # Step k of n scales by (k+1)/n.  The far edges index with -k, so k = 0 lands on the *first*
        # row/column, not the last: ComfyUI's off-by-one, kept for identical results.
        for k in range(left):
            out[:, :, k] *= (k + 1.0) / left
        for k in range(right):
            out[:, :, -k] *= (k + 1.0) / right
        for k in range(top):
            out[:, k, :] *= (k + 1.0) / top
        for k in range(bottom):
            out[:, -k, :] *= (k + 1.0) / bottom
        return (out,)


class MaskToImage(Node):
    CATEGORY = "mask"
    INPUTS = (Socket("MASK", "mask"),)
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (as_mask_batch(mask).unsqueeze(-1).expand(-1, -1, -1, 3),)


class ImageToMask(Node):
    CATEGORY = "mask"
    INPUTS = (Socket("IMAGE", "image"), Socket("COMBO", "channel", multiselect=False, options=list(CHANNELS)))
    OUTPUTS = (Out("MASK"),)

    def execute(self, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        return (image[..., CHANNELS.index(channel)],)


NODE_CLASS_MAPPINGS = {
    "LoadImageMask": LoadImageMask,
    "SolidMask": SolidMask,
    "InvertMask": InvertMask,
    "GrowMask": GrowMask,
    "ThresholdMask": ThresholdMask,
    "FeatherMask": FeatherMask,
    "MaskToImage": MaskToImage,
    "ImageToMask": ImageToMask,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImageMask": "Load Image (as Mask)",
    "SolidMask": "SolidMask",
    "InvertMask": "InvertMask",
    "GrowMask": "Grow Mask",
    "ThresholdMask": "ThresholdMask",
    "FeatherMask": "FeatherMask",
    "MaskToImage": "Convert Mask to Image",
    "ImageToMask": "Convert Image to Mask",
}
