"""Image plumbing shared by the image and mask nodes: tensors <-> PIL, resizing, files, save naming.

Conventions (ComfyUI's): IMAGE is float32 [B,H,W,C] in 0..1, MASK is float [B,H,W] (a bare [H,W]
is accepted as input).  Resizing works on IMAGE layout; torch wants channels first, so the helpers
move the channel axis in and out themselves and callers never juggle layouts.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from model_management.folders import Folders, PathRefused, contained
from nodes.runtime import NodeRuntime

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")
MAX_RESOLUTION = 16384


# ---- tensors <-> PIL ------------------------------------------------------------------------

def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One [H,W,C] image -> 8-bit PIL image, quantized as ComfyUI does (clip(255·x), truncate)."""
    array = np.clip(255.0 * image.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit PIL image -> float32 tensor in 0..1 with the image's own shape ([H,W,C] or [H,W])."""
    return torch.from_numpy(np.array(image).astype(np.float32) / 255.0)


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """Accept [H,W] or [B,H,W] (or anything ending in H,W) and return [B,H,W]."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Drop extra channels, or add opaque alpha (ones), so RGB and RGBA batches can be combined."""
    have = image.shape[-1]
    if have >= channels:
        return image[..., :channels]
    pad = torch.ones(image.shape[:-1] + (channels - have,), dtype=image.dtype, device=image.device)
    return torch.cat((image, pad), dim=-1)


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Cycle or truncate along dim 0 so that two operands of a blend line up image by image."""
    if tensor.shape[0] == batch:
        return tensor
    repeats = math.ceil(batch / tensor.shape[0])
    return tensor.repeat((repeats,) + (1,) * (tensor.dim() - 1))[:batch]


# ---- resizing -------------------------------------------------------------------------------

def center_crop(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B,C,H,W] to the target aspect ratio, trimming equal margins from the long side."""
    old_h, old_w = images.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * new_aspect / old_aspect) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * old_aspect / new_aspect) / 2)
    return images[..., y:old_h - y, x:old_w - x]


def resize(images: torch.Tensor, width: int, height: int, method: str = "bilinear",
           crop: str = "disabled") -> torch.Tensor:
    """Resize an IMAGE batch to width×height with one of UPSCALE_METHODS (lanczos goes through PIL)."""
    x = images.movedim(-1, 1)
    if crop == "center":
        x = center_crop(x, width, height)
    if method == "lanczos":
        resized = [pil_to_tensor(tensor_to_pil(img).resize((width, height), Image.Resampling.LANCZOS))
                   for img in x.movedim(1, -1)]
        return torch.stack([r.reshape(height, width, -1) for r in resized]).to(images.device)
    return F.interpolate(x, size=(height, width), mode=method).movedim(1, -1)


def resize_mask(mask: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize of a MASK to [B,height,width] (a no-op when it already has that size)."""
    mask = as_mask_batch(mask)
    if mask.shape[-2:] == (height, width):
        return mask
    return F.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)


# ---- reading files from workflows -----------------------------------------------------------

def input_file(folders: Folders, name: str, input_name: str = "image") -> Path:
    """Resolve an (optionally annotated) input file name; a refusal names the input and the value."""
    try:
        return folders.annotated_path(name, "input")
    except PathRefused as exc:
        raise PathRefused(f"{input_name}: {exc}") from None


class LoadsInputFile:
    """Mixin for loaders whose `image` input names a file under input/ (plain or annotated).

    Replacing a file under the same name must re-run the loader, so the cache fingerprint is the
    file's SHA-256; a missing or refused file is reported at validation, before anything runs.
    """

    @classmethod
    def IS_CHANGED(cls, image: str, rt: NodeRuntime) -> str:  # noqa: N802 - protocol name
        digest = hashlib.sha256()
        with open(input_file(rt.folders, image), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, image: str | None, rt: NodeRuntime) -> bool | str:  # noqa: N802 - protocol name
        if image is None:  # a link: the name is only known at run time
            return True
        try:
            if input_file(rt.folders, image).is_file():
                return True
        except PathRefused:
            pass
        return f"Invalid image file: {image}"


def frames(image: Image.Image) -> Iterator[Image.Image]:
    """Each frame upright (EXIF orientation applied) with 16/32-bit integer data brought to 0..255.

    Integer modes are scaled by 1/255 (ComfyUI's rule) instead of being clipped to white by
    convert().  Pillow opens 16-bit PNGs as "I;16", which the same rule covers.
    """
    for frame in ImageSequence.Iterator(image):
        frame = ImageOps.exif_transpose(frame)
        if frame.mode == "I" or frame.mode.startswith("I;16"):
            frame = frame.point(lambda v: v * (1 / 255))
        yield frame


# ---- saving ---------------------------------------------------------------------------------

SAVE_OUTSIDE = "Saving image outside the output folder is not allowed."


@dataclass
class SaveTarget:
    """Where a batch goes: `folder/{filename}_{counter:05}_.png`, counter advancing per image."""

    folder: Path
    subfolder: str
    filename: str
    counter: int

    def next_file(self, batch_number: int) -> tuple[str, Path]:
        """Name and path of the next file; the path is contained too (a planted symlink must not leak)."""
        name = f"{self.filename.replace('%batch_num%', str(batch_number))}_{self.counter:05}_.png"
        self.counter += 1
        try:
            return name, contained(self.folder, name)
        except PathRefused as exc:
            raise PathRefused(f"{SAVE_OUTSIDE} {exc}") from None


def png_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> PngInfo:
    """tEXt chunks that let the editor reload a workflow from the PNG: `prompt` plus one per extra key."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def expand_prefix(prefix: str, width: int, height: int) -> str:
    """Server-side prefix variables: %width%/%height% of the first image and the local time."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


def save_target(root: Path, prefix: str, width: int, height: int) -> SaveTarget:
    """Expand and split `prefix` into a sub-folder of `root` (contained) and the next free counter."""
    expanded = os.path.normpath(expand_prefix(prefix, width, height))
    subfolder, filename = os.path.dirname(expanded), os.path.basename(expanded)
    try:
        folder = contained(root, subfolder)
    except PathRefused as exc:
        raise PathRefused(f"{SAVE_OUTSIDE} filename_prefix {prefix!r}: {exc}") from None
    folder.mkdir(parents=True, exist_ok=True)
    return SaveTarget(folder, subfolder, filename, _next_counter(folder, filename))


def _next_counter(folder: Path, filename: str) -> int:
    """1 + the largest counter among `<filename>_<digits>_...` files (names compared via normcase), else 1."""
    stem = os.path.normcase(filename) + "_"
    counters = [0]
    for entry in os.listdir(folder):
        if os.path.normcase(entry[: len(stem)]) != stem:
            continue
        try:
            counters.append(int(entry[len(stem):].split("_")[0]))
        except ValueError:
            continue
    return max(counters) + 1
