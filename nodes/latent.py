"""Latent nodes: make, resize, composite, blend, slice and repeat latents, set noise masks, and move
between pixels and latents with a VAE (plain, tiled and for inpainting).

A LATENT is a dict {"samples": raw VAE latent [B, C, H/8, W/8], optional "noise_mask" [B|1, 1, h, w]
(1 = regenerate), optional "batch_index": [int] (which noise each item gets)}. Nodes return a copied
dict and never change their inputs. Names and inputs follow ComfyUI (spec §9.4).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model_management.handles import VaeHandle
from nodes.imageutil import CROP_METHODS, MAX_RESOLUTION, as_mask_batch, center_crop, repeat_to_batch, resize
from nodes.schema import Combo, Float, Int, Node, Out, Socket

Latent = dict
LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
LATENT_CHANNELS = 4
DOWNSCALE = 8


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1) with linearly interpolated length."""
    len_a, len_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    unit_a, unit_b = a / len_a.clamp_min(1e-12), b / len_b.clamp_min(1e-12)
    omega = (unit_a * unit_b).sum(dim=1, keepdim=True).clamp(-1.0, 1.0).acos()
    sin_omega = omega.sin()
    near = sin_omega.abs() < 1e-6  # (anti)parallel: the arc is undefined, fall back to a straight line
    safe = torch.where(near, torch.ones_like(sin_omega), sin_omega)
    direction = torch.where(near, (1 - t) * unit_a + t * unit_b,
                            (((1 - t) * omega).sin() * unit_a + (t * omega).sin() * unit_b) / safe)
    return direction * ((1 - t) * len_a + t * len_b)


def _bislerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Resample one spatial axis: pixel-centre aligned positions, slerp between the two neighbours."""
    length = x.shape[dim]
    pos = ((torch.arange(size, dtype=torch.float32) + 0.5) * length / size - 0.5).clamp(0, length - 1)
    low = pos.floor().long()
    high = (low + 1).clamp(max=length - 1)
    shape = [1] * x.ndim
    shape[dim] = size
    t = (pos - low).view(shape).to(x)
    return _slerp(x.index_select(dim, low), x.index_select(dim, high), t)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize of [B, C, H, W] that interpolates each cell's channel vector on the sphere, so
    latent magnitudes do not shrink where neighbours point different ways."""
    return _bislerp_axis(_bislerp_axis(samples.float(), width, 3), height, 2).to(samples.dtype)


def upscale_latent(samples: torch.Tensor, width: int, height: int, method: str,
                   crop: str = "disabled") -> torch.Tensor:
    """Resize [B, C, H, W] to height×width cells with one of LATENT_UPSCALE_METHODS."""
    if method != "bislerp":
        return resize(samples.movedim(1, -1), width, height, method, crop).movedim(-1, 1)
    if crop == "center":
        samples = center_crop(samples, width, height)
    return bislerp(samples, width, height)


class EmptyLatentImage(Node):
    """Zeros [B, 4, H/8, W/8]: txt2img starts from pure noise."""

    CATEGORY = "latent"
    INPUTS = (
        Int("width", 512, min=16, max=MAX_RESOLUTION, step=8),
        Int("height", 512, min=16, max=MAX_RESOLUTION, step=8),
        Int("batch_size", 1, min=1, max=4096, step=None),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, width: int, height: int, batch_size: int = 1) -> tuple[Latent]:
        return ({"samples": torch.zeros(batch_size, LATENT_CHANNELS, height // DOWNSCALE, width // DOWNSCALE)},)


class LatentUpscale(Node):
    """Resize to width×height pixels; a 0 side follows the aspect ratio, both 0 leave it; at least 64."""

    CATEGORY = "latent"
    INPUTS = (
        Socket("LATENT", "samples"),
        Combo("upscale_method", LATENT_UPSCALE_METHODS),
        Int("width", 512, min=0, max=MAX_RESOLUTION, step=8),
        Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
        Combo("crop", CROP_METHODS),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, samples: Latent, upscale_method: str, width: int, height: int, crop: str) -> tuple[Latent]:
        if width == 0 and height == 0:
            return (samples,)
        z = samples["samples"]
        if width == 0:
            width = round(z.shape[-1] * height / z.shape[-2])
        elif height == 0:
            height = round(z.shape[-2] * width / z.shape[-1])
        width, height = max(64, width), max(64, height)
        return ({**samples, "samples": upscale_latent(z, width // DOWNSCALE, height // DOWNSCALE,
                                                      upscale_method, crop)},)


class LatentUpscaleBy(Node):
    CATEGORY = "latent"
    INPUTS = (
        Socket("LATENT", "samples"),
        Combo("upscale_method", LATENT_UPSCALE_METHODS),
        Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, samples: Latent, upscale_method: str, scale_by: float) -> tuple[Latent]:
        z = samples["samples"]
        width, height = round(z.shape[-1] * scale_by), round(z.shape[-2] * scale_by)
        return ({**samples, "samples": upscale_latent(z, width, height, upscale_method)},)


def _edge_ramp(size: int, feather: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D weight: (k+1)/feather for the k-th cell from each feathered edge, 1 elsewhere."""
    weight = torch.ones(size)
    rise = (torch.arange(min(feather, size), dtype=torch.float32) + 1) / feather
    if ramp_start:
        weight[:len(rise)] *= rise
    if ramp_end:
        weight[size - len(rise):] *= rise.flip(0)
    return weight


class LatentComposite(Node):
    """Paste samples_from into samples_to at (x, y) pixels; `feather` pixels fade the inner edges."""

    CATEGORY = "latent"
    INPUTS = (
        Socket("LATENT", "samples_to"),
        Socket("LATENT", "samples_from"),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("feather", 0, min=0, max=MAX_RESOLUTION, step=8),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, samples_to: Latent, samples_from: Latent, x: int, y: int, feather: int) -> tuple[Latent]:
        x, y, feather = x // DOWNSCALE, y // DOWNSCALE, feather // DOWNSCALE
        out = samples_to["samples"].clone()
        height, width = out.shape[-2:]
        x, y = min(x, width), min(y, height)
        source = samples_from["samples"][..., :height - y, :width - x]
        h, w = source.shape[-2:]
        region = out[..., y:y + h, x:x + w]
        if feather:
            weight = (_edge_ramp(h, feather, y > 0, y + h < height)[:, None]
                      * _edge_ramp(w, feather, x > 0, x + w < width)[None, :]).to(out)
            source = source * weight + region * (1 - weight)
        out[..., y:y + h, x:x + w] = source
        return ({**samples_to, "samples": out},)


class LatentBlend(Node):
    """samples1·f + samples2·(1 − f); samples2 is resized (bicubic, centre crop) to samples1 if needed."""

    CATEGORY = "_for_testing"
    INPUTS = (
        Socket("LATENT", "samples1"),
        Socket("LATENT", "samples2"),
        Float("blend_factor", 0.5, min=0, max=1, step=0.01),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple[Latent]:
        a, b = samples1["samples"], samples2["samples"]
        if a.shape != b.shape:
            b = upscale_latent(b, a.shape[-1], a.shape[-2], "bicubic", "center")
        return ({**samples1, "samples": a * blend_factor + b * (1 - blend_factor)},)


def _mask_to_batch(mask: torch.Tensor, batch: int) -> torch.Tensor:
    return mask if mask.shape[0] == 1 else repeat_to_batch(mask, batch)


class LatentFromBatch(Node):
    """Items batch_index … batch_index+length−1, keeping their noise (batch_index) and masks."""

    CATEGORY = "latent/batch"
    INPUTS = (
        Socket("LATENT", "samples"),
        Int("batch_index", 0, min=0, max=63, step=None),
        Int("length", 1, min=1, max=64, step=None),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        z = samples["samples"]
        start = min(batch_index, z.shape[0] - 1)
        stop = min(z.shape[0], start + length)
        out = {**samples, "samples": z[start:stop].clone()}
        if samples.get("noise_mask") is not None:
            mask = _mask_to_batch(samples["noise_mask"], z.shape[0])
            out["noise_mask"] = mask if mask.shape[0] == 1 else mask[start:stop].clone()
        indices = samples.get("batch_index", list(range(z.shape[0])))
        out["batch_index"] = list(indices[start:stop])
        return (out,)


class RepeatLatentBatch(Node):
    """The batch `amount` times; repeated items get new noise indices past the originals."""

    CATEGORY = "latent/batch"
    INPUTS = (Socket("LATENT", "samples"), Int("amount", 1, min=1, max=64, step=None))
    OUTPUTS = (Out("LATENT"),)

    def execute(self, samples: Latent, amount: int) -> tuple[Latent]:
        z = samples["samples"]
        out = {**samples, "samples": z.repeat((amount,) + (1,) * (z.ndim - 1))}
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            out["noise_mask"] = _mask_to_batch(mask, z.shape[0]).repeat((amount,) + (1,) * (mask.ndim - 1))
        if "batch_index" in samples:
            indices = samples["batch_index"]
            span = max(indices) - min(indices) + 1
            out["batch_index"] = [i + k * span for k in range(amount) for i in indices]
        return (out,)


class SetLatentNoiseMask(Node):
    """Regenerate only where the mask is 1 (the sampler keeps the input latent elsewhere)."""

    CATEGORY = "latent/inpaint"
    INPUTS = (Socket("LATENT", "samples"), Socket("MASK", "mask"))
    OUTPUTS = (Out("LATENT"),)

    def execute(self, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
        return ({**samples, "noise_mask": as_mask_batch(mask).unsqueeze(1)},)


# ---- VAE ------------------------------------------------------------------------------------


def _require(vae: VaeHandle | None) -> VaeHandle:
    if vae is None:
        raise ValueError("vae input is None: the checkpoint loader's file holds no VAE; load one with VAELoader")
    return vae


class VAEDecode(Node):
    CATEGORY = "latent"
    INPUTS = (Socket("LATENT", "samples"), Socket("VAE", "vae"))
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, samples: Latent, vae: VaeHandle | None) -> tuple[torch.Tensor]:
        return (_require(vae).decode(samples["samples"]),)


class VAEEncode(Node):
    """Pixels (centre-cropped to multiples of 8) to a raw latent (the posterior mean)."""

    CATEGORY = "latent"
    INPUTS = (Socket("IMAGE", "pixels"), Socket("VAE", "vae"))
    OUTPUTS = (Out("LATENT"),)

    def execute(self, pixels: torch.Tensor, vae: VaeHandle | None) -> tuple[Latent]:
        return ({"samples": _require(vae).encode(pixels)},)


def grow_mask(mask: torch.Tensor, grow_by: int) -> torch.Tensor:
    """Dilate a [B, 1, H, W] mask (rounded to 0/1) by a `grow_by`-wide box, keeping the size."""
    if grow_by == 0:
        return mask.round()
    kernel = torch.ones(1, 1, grow_by, grow_by, dtype=mask.dtype)
    pad = math.ceil((grow_by - 1) / 2)
    grown = F.conv2d(mask.round(), kernel, padding=pad).clamp(0, 1)
    return grown[..., :mask.shape[-2], :mask.shape[-1]].round()


class VAEEncodeForInpaint(Node):
    """For inpainting models: masked pixels become grey (0.5) before encoding; the mask, grown by
    `grow_mask_by` pixels, becomes the noise mask (spec §7.9; use denoise 1.0)."""

    CATEGORY = "latent/inpaint"
    INPUTS = (
        Socket("IMAGE", "pixels"),
        Socket("VAE", "vae"),
        Socket("MASK", "mask"),
        Int("grow_mask_by", 6, min=0, max=64, step=1),
    )
    OUTPUTS = (Out("LATENT"),)

    def execute(self, pixels: torch.Tensor, vae: VaeHandle | None, mask: torch.Tensor,
                grow_mask_by: int = 6) -> tuple[Latent]:
        vae = _require(vae)
        height, width = pixels.shape[1:3]
        mask = F.interpolate(as_mask_batch(mask).unsqueeze(1).float(), size=(height, width), mode="bilinear")
        f = vae.downscale_factor
        new_h, new_w = height // f * f, width // f * f
        top, left = (height - new_h) // 2, (width - new_w) // 2
        pixels = pixels[:, top:top + new_h, left:left + new_w, :3]
        mask = mask[..., top:top + new_h, left:left + new_w]
        keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
        grey = (pixels - 0.5) * keep + 0.5
        return ({"samples": vae.encode(grey), "noise_mask": grow_mask(mask, grow_mask_by)},)


def _tiled_inputs(tile_step: int) -> tuple:
    return (
        Int("tile_size", 512, min=64, max=4096, step=tile_step),
        Int("overlap", 64, min=0, max=4096, step=32),
        Int("temporal_size", 64, min=8, max=4096, step=4),
        Int("temporal_overlap", 8, min=4, max=4096, step=4),
    )


class VAEDecodeTiled(Node):
    """VAEDecode in overlapping tiles of `tile_size` pixels (bounded memory); temporal_* are for video."""

    CATEGORY = "_for_testing"
    INPUTS = (Socket("LATENT", "samples"), Socket("VAE", "vae"), *_tiled_inputs(32))
    OUTPUTS = (Out("IMAGE"),)

    def execute(self, samples: Latent, vae: VaeHandle | None, tile_size: int, overlap: int = 64,
                temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[torch.Tensor]:
        return (_require(vae).decode_tiled(samples["samples"], tile_size, overlap),)


class VAEEncodeTiled(Node):
    CATEGORY = "_for_testing"
    INPUTS = (Socket("IMAGE", "pixels"), Socket("VAE", "vae"), *_tiled_inputs(64))
    OUTPUTS = (Out("LATENT"),)

    def execute(self, pixels: torch.Tensor, vae: VaeHandle | None, tile_size: int, overlap: int = 64,
                temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[Latent]:
        return ({"samples": _require(vae).encode_tiled(pixels, tile_size, overlap)},)


NODE_CLASS_MAPPINGS = {
    "EmptyLatentImage": EmptyLatentImage,
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "LatentComposite": LatentComposite,
    "LatentBlend": LatentBlend,
    "LatentFromBatch": LatentFromBatch,
    "RepeatLatentBatch": RepeatLatentBatch,
    "SetLatentNoiseMask": SetLatentNoiseMask,
    "VAEDecode": VAEDecode,
    "VAEEncode": VAEEncode,
    "VAEEncodeForInpaint": VAEEncodeForInpaint,
    "VAEDecodeTiled": VAEDecodeTiled,
    "VAEEncodeTiled": VAEEncodeTiled,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "EmptyLatentImage": "Empty Latent Image",
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "LatentComposite": "Latent Composite",
    "LatentBlend": "Latent Blend",
    "LatentFromBatch": "Latent From Batch",
    "RepeatLatentBatch": "Repeat Latent Batch",
    "SetLatentNoiseMask": "Set Latent Noise Mask",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
    "VAEDecodeTiled": "VAE Decode (Tiled)",
    "VAEEncodeTiled": "VAE Encode (Tiled)",
}
