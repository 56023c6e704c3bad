"""Image nodes: load, save and preview files; make, invert, resize, pad, crop, batch and composite images.

Names, inputs, defaults and semantics follow ComfyUI (spec comfy_api.md §6, §9.5, §9.9).
"""
from __future__ import annotations

import random

import torch
from PIL import Image

from model_management.folders import IMAGE_EXTENSIONS
from nodes.imageutil import (CROP_METHODS, MAX_RESOLUTION, UPSCALE_METHODS, LoadsInputFile, as_mask_batch,
                             frames, input_file, match_channels, pil_to_tensor, png_metadata, repeat_to_batch,
                             resize, resize_mask, save_target, tensor_to_pil)
from nodes.runtime import NodeRuntime
from nodes.schema import Boolean, Combo, Float, Int, Node, Out, Socket

# ---- files ----------------------------------------------------------------------------------


class LoadImage(LoadsInputFile, Node):
    """An image from input/ as IMAGE plus MASK (1 − alpha: white marks what to repaint)."""

    CATEGORY = "image"
    INPUTS = (Combo("image", lambda s: s.folders.list_files("input", IMAGE_EXTENSIONS) if s else [],
                    image_upload=True),)
    OUTPUTS = (Out("IMAGE"), Out("MASK"))

    def execute(self, image: str, rt: NodeRuntime) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(input_file(rt.folders, image)) as img:
            return _decode(img)


def _decode(img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames of the first frame's size (one for MPO, whose extra frames are not animation)."""
    pictures: list[torch.Tensor] = []
    alphas: list[torch.Tensor | None] = []
    for frame in frames(img):
        if pictures and frame.size != (pictures[0].shape[1], pictures[0].shape[0]):
            continue
        pictures.append(pil_to_tensor(frame.convert("RGB")))
        alphas.append(_alpha(frame))
        if img.format == "MPO":
            break
    images = torch.stack(pictures)
    if all(a is None for a in alphas):
        return images, torch.zeros((len(pictures), 64, 64), dtype=torch.float32)
    opaque = torch.ones(images.shape[1:3], dtype=torch.float32)
    return images, 1.0 - torch.stack([opaque if a is None else a for a in alphas])


def _alpha(frame: Image.Image) -> torch.Tensor | None:
    if "A" in frame.getbands():
        return pil_to_tensor(frame.getchannel("A"))
    if frame.mode == "P" and "transparency" in frame.info:
        return pil_to_tensor(frame.convert("RGBA").getchannel("A"))
    return None


class SaveImage(Node):
    """PNGs in output/ carrying the prompt and workflow, so dropping one on the editor reloads it."""

    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    OUTPUT_NODE = True
    INPUTS = (
        Socket("IMAGE", "images", tooltip="The images to save."),
        Socket("STRING", "filename_prefix", default="ComfyUI",
               tooltip="The prefix for the file to save. This may include formatting information such as "
                       "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."),
    )
    HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    FILE_TYPE = "output"
    COMPRESS_LEVEL = 4
    prefix_append = ""

    def execute(self, images: torch.Tensor, rt: NodeRuntime, filename_prefix: str = "ComfyUI",
                prompt: dict | None = None, extra_pnginfo: dict | None = None) -> dict:
        target = save_target(rt.folders.type_dir(self.FILE_TYPE), filename_prefix + self.prefix_append,
                             width=images.shape[2], height=images.shape[1])
        metadata = None if rt.services.disable_metadata else png_metadata(prompt, extra_pnginfo)
        saved = []
        for batch_number, image in enumerate(images):
            name, path = target.next_file(batch_number)
            tensor_to_pil(image).save(path, pnginfo=metadata, compress_level=self.COMPRESS_LEVEL)
            saved.append({"filename": name, "subfolder": target.subfolder, "type": self.FILE_TYPE})
        return {"ui": {"images": saved}}


class PreviewImage(SaveImage):
    """SaveImage into temp/ with fast compression; each instance gets its own random name prefix."""

    INPUTS = (Socket("IMAGE", "images"),)
    FILE_TYPE = "temp"
    COMPRESS_LEVEL = 1

    def __init__(self) -> None:
        # ComfyUI's alphabet (sic: "p" twice, no "w"); kept so names look the same.
        self.prefix_append = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))


# ---- making and transforming images ---------------------------------------------------------


class EmptyImage(Node):
    """A batch of solid-colour images; `color` is 0xRRGGBB."""

    CATEGORY = "image"
    INPUTS = (
        Int("width", 512, min=1, max=MAX_RESOLUTION),
        Int("height", 512, min=1, max=MAX_RESOLUTION),
        Int("batch_size", 1, min=1, max=4096, step=None),
        Int("color", 0, min=0, max=0xFFFFFF, display="color"),
    )
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[torch.Tensor]:
        rgb = torch.tensor([((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)], dtype=torch.float32)
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageInvert(Node):
    CATEGORY = "image"
    INPUTS = (Socket("IMAGE", "image"),)
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class ImageScale(Node):
    """Resize to width×height; a 0 side keeps the aspect ratio, both 0 leaves the image alone."""

    CATEGORY = "image/upscaling"
    INPUTS = (
        Socket("IMAGE", "image"),
        Combo("upscale_method", UPSCALE_METHODS),
        Int("width", 512, min=0, max=MAX_RESOLUTION),
        Int("height", 512, min=0, max=MAX_RESOLUTION),
        Combo("crop", CROP_METHODS),
    )
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image: torch.Tensor, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[torch.Tensor]:
        if width == 0 and height == 0:
            return (image,)
        old_h, old_w = image.shape[1:3]
        if width == 0:
            width = max(1, round(old_w * height / old_h))
        elif height == 0:
            height = max(1, round(old_h * width / old_w))
        return (resize(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    CATEGORY = "image/upscaling"
    INPUTS = (
        Socket("IMAGE", "image"),
        Combo("upscale_method", UPSCALE_METHODS),
        Float("scale_by", 1.0, min=0.01, max=8.0),
    )
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        height, width = (max(1, round(side * scale_by)) for side in image.shape[1:3])
        return (resize(image, width, height, upscale_method),)


class ImagePadForOutpaint(Node):
    """Grow the canvas with grey; the MASK is 1 on the new border and fades into the image over `feathering`."""

    CATEGORY = "image"
    INPUTS = (
        Socket("IMAGE", "image"),
        *(Int(side, 0, min=0, max=MAX_RESOLUTION, step=8) for side in ("left", "top", "right", "bottom")),
        Int("feathering", 40, min=0, max=MAX_RESOLUTION),
    )
    OUTPUTS = (Out("IMAGE"), Out("MASK"))

    def execute(self, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, height, width, channels = image.shape
        padded = torch.full((batch, top + height + bottom, left + width + right, channels), 0.5,
                            dtype=torch.float32)
        padded[:, top:top + height, left:left + width] = image
        mask = torch.ones(padded.shape[1:3], dtype=torch.float32)
        mask[top:top + height, left:left + width] = _feather(height, width, feathering, left, top, right, bottom)
        return padded, mask.unsqueeze(0)


def _feather(height: int, width: int, feathering: int, left: int, top: int, right: int,
             bottom: int) -> torch.Tensor:
    """Inside-the-image part of the outpaint mask: ((f − d) / f)² within f pixels of a padded edge.

    d is the distance to the nearest edge that received padding; no feathering when 2·f does not
    fit in the image.
    """
    if not (feathering > 0 and 2 * feathering < height and 2 * feathering < width):
        return torch.zeros((height, width), dtype=torch.float32)
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    far_h, far_w = torch.tensor(float(height)), torch.tensor(float(width))
    distance = torch.minimum(
        torch.minimum(rows if top else far_h, height - rows if bottom else far_h),
        torch.minimum(cols if left else far_w, width - cols if right else far_w))
    fade = ((feathering - distance) / feathering) ** 2
    return torch.where(distance < feathering, fade, 0.0).to(torch.float32)


class ImageCrop(Node):
    CATEGORY = "image/transform"
    INPUTS = (
        Socket("IMAGE", "image"),
        Int("width", 512, min=1, max=MAX_RESOLUTION),
        Int("height", 512, min=1, max=MAX_RESOLUTION),
        Int("x", 0, min=0, max=MAX_RESOLUTION),
        Int("y", 0, min=0, max=MAX_RESOLUTION),
    )
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple[torch.Tensor]:
        # An origin past the edge is pulled back so at least one pixel row/column remains.
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


# ---- batches --------------------------------------------------------------------------------


class ImageBatch(Node):
    """image1 followed by image2; image2 is resized (bilinear, centre crop) to image1's size."""

    CATEGORY = "image"
    DEPRECATED = True
    INPUTS = (Socket("IMAGE", "image1"), Socket("IMAGE", "image2"))
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = match_channels(image1, channels), match_channels(image2, channels)
        if image1.shape[1:3] != image2.shape[1:3]:
            image2 = resize(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return (torch.cat((image1, image2)),)


class RepeatImageBatch(Node):
    CATEGORY = "image/batch"
    INPUTS = (Socket("IMAGE", "image"), Int("amount", 1, min=1, max=4096, step=None))
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        return (image.repeat((amount, 1, 1, 1)),)


class ImageFromBatch(Node):
    """`length` images starting at `batch_index`, both clamped to what the batch holds."""

    CATEGORY = "image/batch"
    INPUTS = (
        Socket("IMAGE", "image"),
        Int("batch_index", 0, min=0, max=4095, step=None),
        Int("length", 1, min=1, max=4096, step=None),
    )
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        start = min(batch_index, image.shape[0] - 1)
        return (image[start:start + length].clone(),)


# ---- compositing ----------------------------------------------------------------------------


class ImageCompositeMasked(Node):
    """Paste `source` onto `destination` at (x, y), blended by `mask` (1 = source)."""

    CATEGORY = "image"
    INPUTS = (
        Socket("IMAGE", "destination"),
        Socket("IMAGE", "source"),
        Int("x", 0, min=0, max=MAX_RESOLUTION),
        Int("y", 0, min=0, max=MAX_RESOLUTION),
        Boolean("resize_source", False),
        Socket("MASK", "mask", optional=True),
    )
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, resize_source: bool,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        out = destination.clone()
        batch, height, width, channels = out.shape
        source = match_channels(source, channels)
        if resize_source:
            source = resize(source, width, height, "bilinear")
        source = repeat_to_batch(source, batch)
        src_h, src_w = source.shape[1:3]
        if mask is None:
            weight = torch.ones(source.shape[:3])
        else:
            weight = repeat_to_batch(resize_mask(mask, src_w, src_h), batch)
        # The part of the source that lands inside the destination.
        x, y = min(x, width), min(y, height)
        h, w = min(src_h, height - y), min(src_w, width - x)
        weight = weight[:, :h, :w, None].to(out)
        region = out[:, y:y + h, x:x + w]
        out[:, y:y + h, x:x + w] = weight * source[:, :h, :w] + (1.0 - weight) * region
        return (out,)


class JoinImageWithAlpha(Node):
    """RGBA from an image and a MASK; alpha = 1 − mask (the inverse of LoadImage's mask)."""

    CATEGORY = "mask/compositing"
    INPUTS = (Socket("IMAGE", "image"), Socket("MASK", "alpha"))
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, image: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor]:
        alpha = as_mask_batch(alpha)
        batch = min(image.shape[0], alpha.shape[0])
        alpha = 1.0 - resize_mask(alpha[:batch], image.shape[2], image.shape[1])
        return (torch.cat((image[:batch, ..., :3], alpha.unsqueeze(-1).to(image)), dim=-1),)


NODE_CLASS_MAPPINGS = {
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "EmptyImage": EmptyImage,
    "ImageInvert": ImageInvert,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImagePadForOutpaint": ImagePadForOutpaint,
    "ImageCrop": ImageCrop,
    "ImageBatch": ImageBatch,
    "RepeatImageBatch": RepeatImageBatch,
    "ImageFromBatch": ImageFromBatch,
    "ImageCompositeMasked": ImageCompositeMasked,
    "JoinImageWithAlpha": JoinImageWithAlpha,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImage": "Load Image",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "EmptyImage": "EmptyImage",
    "ImageInvert": "Invert Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImagePadForOutpaint": "Pad Image for Outpainting",
    "ImageCrop": "Image Crop",
    "ImageBatch": "Batch Images",
    "RepeatImageBatch": "RepeatImageBatch",
    "ImageFromBatch": "ImageFromBatch",
    "ImageCompositeMasked": "ImageCompositeMasked",
    "JoinImageWithAlpha": "Join Image with Alpha",
}
