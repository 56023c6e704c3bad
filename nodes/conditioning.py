"""Conditioning nodes: encode prompts with a CLIP, then combine, average, concatenate, restrict (area,
mask, timestep range), reweight or zero conditionings.

A CONDITIONING is a list of [tensor [1, T, D], dict] pairs. Dict keys used here: ``pooled_output``,
``area`` ((h, w, y, x) in latent cells, or ("percentage", h, w, y, x)), ``strength``,
``set_area_to_bounds``, ``mask``, ``mask_strength``, ``start_percent`` / ``end_percent``, and SDXL's
``width`` / ``height`` / ``crop_w`` / ``crop_h`` / ``target_width`` / ``target_height`` /
``aesthetic_score``; the sampler reads them (diffusion.model, diffusion.guidance). Nodes never change
their input: every output holds copied dicts. Names and inputs follow ComfyUI (spec §9.2, §9.9).
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from model_management.files import embedding_lookup
from model_management.handles import ClipHandle, Tokens
from nodes.imageutil import MAX_RESOLUTION, as_mask_batch
from nodes.runtime import NodeRuntime
from nodes.schema import Combo, Float, Int, Node, Out, Socket, String

log = logging.getLogger(__name__)

Conditioning = list[list[Any]]


def _with(conditioning: Conditioning, **values: Any) -> tuple[Conditioning]:
    """The conditioning with `values` set in (a copy of) every entry's dict."""
    return ([[tensor, {**options, **values}] for tensor, options in conditioning],)


def _prompt(name: str) -> Any:
    return String(name, None, multiline=True, dynamicPrompts=True)


def _encode(clip: ClipHandle | None, rt: NodeRuntime, tokens_for: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if clip is None:
        raise ValueError("clip input is None: the checkpoint loader's file holds no text encoder; "
                         "load one with CLIPLoader / DualCLIPLoader")
    return clip.encode_tokens(tokens_for(embedding_lookup(rt.folders, clip.widths)))


class CLIPTextEncode(Node):
    """A prompt (with (weights:1.2) and embedding:name) encoded by every text encoder of the CLIP."""

    CATEGORY = "conditioning"
    INPUTS = (_prompt("text"), Socket("CLIP", "clip"))
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, text: str, clip: ClipHandle | None, rt: NodeRuntime) -> tuple[Conditioning]:
        cond, pooled = _encode(clip, rt, lambda lookup: clip.tokenize(text, lookup))
        return ([[cond, {"pooled_output": pooled}]],)


def _pad_chunks(tokens: Tokens, empty: Tokens) -> Tokens:
    """Extend the shorter encoders' chunk lists with empty-prompt chunks to the longest one's count."""
    count = max(len(chunks) for chunks in tokens.values())
    return {key: chunks + [empty[key][0]] * (count - len(chunks)) for key, chunks in tokens.items()}


class CLIPTextEncodeSDXL(Node):
    """SDXL base: text_g for bigG, text_l for CLIP-L, plus the size / crop conditioning (spec §7.7)."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (
        Socket("CLIP", "clip"),
        Int("width", 1024, min=0, max=MAX_RESOLUTION, step=None),
        Int("height", 1024, min=0, max=MAX_RESOLUTION, step=None),
        Int("crop_w", 0, min=0, max=MAX_RESOLUTION, step=None),
        Int("crop_h", 0, min=0, max=MAX_RESOLUTION, step=None),
        Int("target_width", 1024, min=0, max=MAX_RESOLUTION, step=None),
        Int("target_height", 1024, min=0, max=MAX_RESOLUTION, step=None),
        _prompt("text_g"),
        _prompt("text_l"),
    )
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, clip: ClipHandle | None, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
                target_height: int, text_g: str, text_l: str, rt: NodeRuntime) -> tuple[Conditioning]:
        if clip is not None and set(clip.widths) != {"clip_l", "clip_g"}:
            raise ValueError(f"CLIPTextEncodeSDXL needs SDXL's CLIP-L and bigG; this CLIP has {sorted(clip.widths)}")

        def tokens_for(lookup: Any) -> Tokens:
            tokens = {**clip.tokenize(text_g, lookup), "clip_l": clip.tokenize(text_l, lookup)["clip_l"]}
            return _pad_chunks(tokens, clip.tokenize(""))

        cond, pooled = _encode(clip, rt, tokens_for)
        return ([[cond, {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w,
                         "crop_h": crop_h, "target_width": target_width, "target_height": target_height}]],)


class CLIPTextEncodeSDXLRefiner(Node):
    """SDXL refiner: the prompt plus aesthetic score and size conditioning (spec §7.7)."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (
        Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01),
        Int("width", 1024, min=0, max=MAX_RESOLUTION, step=None),
        Int("height", 1024, min=0, max=MAX_RESOLUTION, step=None),
        _prompt("text"),
        Socket("CLIP", "clip"),
    )
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, ascore: float, width: int, height: int, text: str, clip: ClipHandle | None,
                rt: NodeRuntime) -> tuple[Conditioning]:
        cond, pooled = _encode(clip, rt, lambda lookup: clip.tokenize(text, lookup))
        return ([[cond, {"pooled_output": pooled, "aesthetic_score": ascore, "width": width, "height": height}]],)


class ConditioningCombine(Node):
    """Both lists of entries: the sampler runs each and mixes the predictions (area / mask weighted)."""

    CATEGORY = "conditioning"
    INPUTS = (Socket("CONDITIONING", "conditioning_1"), Socket("CONDITIONING", "conditioning_2"))
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (conditioning_1 + conditioning_2,)


def _first(conditioning_from: Conditioning, node: str) -> tuple[torch.Tensor, dict]:
    if len(conditioning_from) > 1:
        log.warning("%s: conditioning_from has %d entries; only the first is used", node, len(conditioning_from))
    return conditioning_from[0][0], conditioning_from[0][1]


class ConditioningAverage(Node):
    """to·s + from·(1 − s) per token (from cut or zero-padded to to's length); pooled outputs likewise."""

    CATEGORY = "conditioning"
    INPUTS = (
        Socket("CONDITIONING", "conditioning_to"),
        Socket("CONDITIONING", "conditioning_from"),
        Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01),
    )
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning_to: Conditioning, conditioning_from: Conditioning,
                conditioning_to_strength: float) -> tuple[Conditioning]:
        source, source_options = _first(conditioning_from, "ConditioningAverage")
        pooled_from = source_options.get("pooled_output")
        s = conditioning_to_strength
        out = []
        for tensor, options in conditioning_to:
            length = tensor.shape[1]
            fitted = source[:, :length]
            if fitted.shape[1] < length:
                pad = torch.zeros(fitted.shape[0], length - fitted.shape[1], fitted.shape[2], dtype=fitted.dtype)
                fitted = torch.cat([fitted, pad], dim=1)
            options = dict(options)
            pooled_to = options.get("pooled_output")
            if pooled_from is not None:
                options["pooled_output"] = pooled_from if pooled_to is None else pooled_to * s + pooled_from * (1 - s)
            out.append([tensor * s + fitted * (1 - s), options])
        return (out,)


class ConditioningConcat(Node):
    """Appends from's tokens to every entry of to (a second 77-token chunk; ComfyUI's "BREAK")."""

    CATEGORY = "conditioning"
    INPUTS = (Socket("CONDITIONING", "conditioning_to"), Socket("CONDITIONING", "conditioning_from"))
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Conditioning]:
        source, _ = _first(conditioning_from, "ConditioningConcat")
        return ([[torch.cat([tensor, source], dim=1), dict(options)] for tensor, options in conditioning_to],)


class ConditioningSetArea(Node):
    """Restrict to a rectangle given in pixels; stored in latent cells as (h, w, y, x)."""

    CATEGORY = "conditioning"
    INPUTS = (
        Socket("CONDITIONING", "conditioning"),
        Int("width", 64, min=64, max=MAX_RESOLUTION, step=8),
        Int("height", 64, min=64, max=MAX_RESOLUTION, step=8),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
    )
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, width: int, height: int, x: int, y: int,
                strength: float) -> tuple[Conditioning]:
        return _with(conditioning, area=(height // 8, width // 8, y // 8, x // 8), strength=strength,
                     set_area_to_bounds=False)


class ConditioningSetAreaPercentage(Node):
    """Restrict to a rectangle given as fractions of the image: ("percentage", h, w, y, x)."""

    CATEGORY = "conditioning"
    INPUTS = (
        Socket("CONDITIONING", "conditioning"),
        Float("width", 1.0, min=0, max=1.0, step=0.01),
        Float("height", 1.0, min=0, max=1.0, step=0.01),
        Float("x", 0, min=0, max=1.0, step=0.01),
        Float("y", 0, min=0, max=1.0, step=0.01),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
    )
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, width: float, height: float, x: float, y: float,
                strength: float) -> tuple[Conditioning]:
        return _with(conditioning, area=("percentage", height, width, y, x), strength=strength,
                     set_area_to_bounds=False)


class ConditioningSetAreaStrength(Node):
    CATEGORY = "conditioning"
    INPUTS = (Socket("CONDITIONING", "conditioning"), Float("strength", 1.0, min=0.0, max=10.0, step=0.01))
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return _with(conditioning, strength=strength)


class ConditioningSetMask(Node):
    """Weight by a pixel mask; "mask bounds" also crops sampling to the mask's bounding box."""

    CATEGORY = "conditioning"
    INPUTS = (
        Socket("CONDITIONING", "conditioning"),
        Socket("MASK", "mask"),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
        Combo("set_cond_area", ("default", "mask bounds")),
    )
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, mask: torch.Tensor, strength: float,
                set_cond_area: str) -> tuple[Conditioning]:
        return _with(conditioning, mask=as_mask_batch(mask), set_area_to_bounds=set_cond_area != "default",
                     mask_strength=strength)


class ConditioningZeroOut(Node):
    """All-zero tokens and pooled output (SDXL's empty negative, unCLIP-only prompts)."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (Socket("CONDITIONING", "conditioning"),)
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning: Conditioning) -> tuple[Conditioning]:
        out = []
        for tensor, options in conditioning:
            options = dict(options)
            if options.get("pooled_output") is not None:
                options["pooled_output"] = torch.zeros_like(options["pooled_output"])
            out.append([torch.zeros_like(tensor), options])
        return (out,)


class ConditioningSetTimestepRange(Node):
    """Active only from `start` to `end` of the sampling run (fractions; 0 = the noisy start)."""

    CATEGORY = "advanced/conditioning"
    INPUTS = (
        Socket("CONDITIONING", "conditioning"),
        Float("start", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end", 1.0, min=0.0, max=1.0, step=0.001),
    )
    OUTPUTS = (Out("CONDITIONING"),)

    def execute(self, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return _with(conditioning, start_percent=start, end_percent=end)


NODE_CLASS_MAPPINGS = {
    "CLIPTextEncode": CLIPTextEncode,
    "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL,
    "CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner,
    "ConditioningCombine": ConditioningCombine,
    "ConditioningAverage": ConditioningAverage,
    "ConditioningConcat": ConditioningConcat,
    "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetAreaStrength": ConditioningSetAreaStrength,
    "ConditioningSetMask": ConditioningSetMask,
    "ConditioningZeroOut": ConditioningZeroOut,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
}

# ConditioningAverage, ConditioningSetAreaStrength, ConditioningZeroOut, ConditioningSetTimestepRange and
# the SDXL encoders show their class names (ComfyUI's display-name table misses them, spec §9.2).
NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningConcat": "Conditioning (Concat)",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
    "ConditioningSetMask": "Conditioning (Set Mask)",
}
